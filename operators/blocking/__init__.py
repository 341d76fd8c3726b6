"""Scene blocking operators: level, scale, export, animated camera, image planes.

Thin: the maths is in ``core/blocking``; ``common`` finds the last result and its collection and
moves both, ``sync`` keeps the objects on a moved result, ``animated_camera`` and
``image_planes`` build those objects.
"""

from __future__ import annotations

from . import animated, export, level, planes, scale

CLASSES = level.CLASSES + scale.CLASSES + export.CLASSES + animated.CLASSES + planes.CLASSES

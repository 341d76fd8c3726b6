"""Blender operators of the extension (thin: settings in, job out, result into the scene).

``cli.py`` is the headless entry point; ``builders/`` turns a result into Blender objects.
"""

from __future__ import annotations

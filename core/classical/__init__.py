"""The classical backend: SIFT structure from motion (pycolmap) plus our own multi-view stereo.

* :mod:`.sfm` — cameras and sparse points from photos (pycolmap, temporary workspace).
* :mod:`.mvs` — plane-sweep multi-view stereo in torch, for estimated or known cameras.
* :mod:`.backend` — the ``run(job, progress)`` entry point and its options.
"""

from __future__ import annotations

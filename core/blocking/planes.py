"""Image planes: each photo as a quad in its camera's frustum at a chosen depth (numpy only)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

PLANE_UVS = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
"""``(4, 2)`` float64 texture coordinates of the corners of :func:`image_plane_corners`
(top-left, top-right, bottom-right, bottom-left; v grows upward in Blender's UV space)."""


def image_plane_corners(K_photo: np.ndarray, photo_size: tuple[int, int], depth: float) -> np.ndarray:
    """``(4, 3)`` float64 camera-local points (OpenCV axes) where the photo's outer corners are
    seen at z-depth ``depth``: top-left, top-right, bottom-right, bottom-left.

    The outer corners of a ``W x H`` photo are at pixel coordinates ``-0.5`` and ``W - 0.5``
    (``H - 0.5``) in our pixel-centre convention, so the quad fills the camera's view exactly.

    Args:
        K_photo: ``(3, 3)`` intrinsics in photo pixels.
        photo_size: ``(W, H)`` of the photo.
        depth: distance along the viewing axis, in world units.

    Raises:
        InputError: ``depth`` is not a positive number.
    """
    if not np.isfinite(depth) or depth <= 0:
        raise InputError(f"The image plane depth must be a positive distance, not {depth}.")
    w, h = photo_size
    corners = np.array([[-0.5, -0.5, 1.0], [w - 0.5, -0.5, 1.0], [w - 0.5, h - 0.5, 1.0],
                        [-0.5, h - 0.5, 1.0]])
    rays = corners @ np.linalg.inv(np.asarray(K_photo, np.float64)).T
    return rays / rays[:, 2:3] * depth

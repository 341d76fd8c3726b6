"""Focal length of a camera from its own pointmap (robust, Weiszfeld)."""

from __future__ import annotations

import numpy as np

DEFAULT_FOV_DEG = 60.0
"""Field of view of the reference's ``focal_base`` (dust3r_reference.md §2.7)."""


def focal_base(height: int, width: int) -> float:
    """The reference's default focal ``max(H, W) / (2 tan 30 deg)`` in pixels of an ``H x W`` map
    (a 60 degree field of view along the long side)."""
    return max(height, width) / (2.0 * np.tan(np.radians(DEFAULT_FOV_DEG / 2)))


def focal_from_pointmap(
    pts_cam: np.ndarray, uv: np.ndarray, pp: np.ndarray, weight: np.ndarray, iterations: int = 10
) -> float:
    """Focal ``f`` minimising ``sum weight * |(uv - pp) - f * (x/z, y/z)|`` (pixels).

    The points must be in the camera's OWN frame (the reference once used another image's
    pointmap here, dust3r issue #164). Starts from the least-squares closed form, then runs
    Weiszfeld iterations (weights divided by the pixel residual) for robustness to outliers.

    Args:
        pts_cam: ``(M, 3)`` points in the camera frame.
        uv: ``(M, 2)`` their pixel coordinates.
        pp: ``(2,)`` principal point.
        weight: ``(M,)`` non-negative weights.

    Returns:
        the focal length in pixels: NaN if no point is usable, and not positive for points that
        contradict the pixels (as the reference, no clipping here; :func:`usable_focal` checks).
    """
    pts_cam = np.asarray(pts_cam, np.float64)
    z = pts_cam[:, 2]
    ok = (z > 0) & (weight > 0)
    xy = pts_cam[ok, :2] / z[ok, None]
    centred = np.asarray(uv, np.float64)[ok] - pp
    base = np.asarray(weight, np.float64)[ok]
    if len(xy) == 0:
        return float("nan")
    num = (xy * centred).sum(1)
    den = (xy * xy).sum(1)
    w = base
    f = (w @ num) / max(w @ den, 1e-300)
    for _ in range(iterations):
        residual = np.linalg.norm(centred - f * xy, axis=1)
        w = base / np.maximum(residual, 1e-8)
        f = (w @ num) / max(w @ den, 1e-300)
    return float(f)


def usable_focal(f: float) -> bool:
    """Whether an estimated focal can make a camera (finite and positive)."""
    return bool(np.isfinite(f) and f > 0)

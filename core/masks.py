"""Which pixels of a result become geometry: confidence masks, the sky heuristic, point budgets.

numpy only, plus scipy for the sky mask (no OpenCV, no bpy): shared by the Blender importers and
the exports. scipy is imported when the sky mask is used, so Blender does not load it with the
add-on.
"""

from __future__ import annotations

import numpy as np

# The reference demo's sky thresholds, in OpenCV's 8-bit HSV units (H in 0..179, S and V in
# 0..255). It converts the RGB image as if it were BGR, so "hue 0..30" there selects what is
# really blue (see sky_mask).
_SKY_HUE_MAX = 30
_SKY_VALUE_MIN = 100
_SKY_GREY_RULES = ((10, 150), (30, 180), (50, 220))  # (saturation below, value above)
_SKY_OPENING = np.ones((5, 5), bool)
_EIGHT_CONNECTED = np.ones((3, 3), bool)


def valid_mask(
    pts3d: np.ndarray,
    conf: np.ndarray,
    conf_threshold: float,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels that make geometry: finite point, confidence above the threshold, not excluded.

    Args:
        pts3d: ``(H, W, 3)`` float points (NaN where unknown).
        conf: ``(H, W)`` float confidence, larger is better.
        conf_threshold: keep pixels with ``conf > conf_threshold`` (as the reference does).
        exclude: optional ``(H, W)`` bool of pixels to drop (e.g. :func:`sky_mask`).

    Returns:
        ``(H, W)`` bool.
    """
    # Three elementwise tests: much faster than np.isfinite(pts3d).all(axis=-1) on big maps.
    x, y, z = pts3d[..., 0], pts3d[..., 1], pts3d[..., 2]
    mask = (conf > conf_threshold) & np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    if exclude is not None:
        mask &= ~exclude
    return mask


def _opencv_hsv_u8(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` int32 HSV of an 8-bit image the way ``cv2.COLOR_RGB2HSV`` defines it.

    H = hue in degrees / 2 (0..179), S = 255 * (max - min) / max, V = max. Values are rounded to
    the nearest integer (OpenCV's fixed-point tables can differ by one unit at the rounding edge).
    """
    c = rgb.astype(np.float64)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    v = c.max(axis=-1)
    spread = v - c.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(v > 0, 255.0 * spread / v, 0.0)
        safe = np.where(spread > 0, spread, 1.0)
        h = np.where(
            v == r,
            60.0 * (g - b) / safe,
            np.where(v == g, 120.0 + 60.0 * (b - r) / safe, 240.0 + 60.0 * (r - g) / safe),
        )
    h = np.where(spread > 0, np.mod(h, 360.0), 0.0)
    hsv = np.stack([np.rint(h / 2.0) % 180, np.rint(s), v], axis=-1)
    return hsv.astype(np.int32)


def sky_mask(rgb: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: sky pixels by the DUSt3R demo's colour heuristic (no network).

    Steps, as in the reference: HSV of the image read with its channels swapped (the reference
    hands an RGB image to a BGR->HSV conversion, so its "hue 0..30, value >= 100" band picks blue
    hues), plus bright low-saturation pixels; a 5x5 binary opening; then only the 8-connected
    components larger than half the largest are kept. It is a heuristic: white walls and blue
    objects can be taken for sky.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image.
    """
    from scipy import ndimage  # noqa: PLC0415 - only this heuristic needs it

    hsv = _opencv_hsv_u8(np.asarray(rgb)[..., ::-1])
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    mask = (hue <= _SKY_HUE_MAX) & (val >= _SKY_VALUE_MIN)
    for sat_below, val_above in _SKY_GREY_RULES:
        mask |= (sat < sat_below) & (val > val_above)
    mask = ndimage.binary_opening(mask, structure=_SKY_OPENING)
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes > sizes.max() / 2) + 1
    return np.isin(labels, keep)


def limit_points(count: int, max_points: int, seed: int = 0) -> np.ndarray | None:
    """``(count,)`` bool selecting at most ``max_points`` of ``count`` points, or None for all.

    A fixed-seed uniform sample, so re-importing with the same settings gives the same points.
    ``max_points <= 0`` means no limit.
    """
    if max_points <= 0 or count <= max_points:
        return None
    rng = np.random.default_rng(seed)
    # Draw the smaller of the two sets: sampling without replacement costs the sample's size.
    if max_points <= count // 2:
        keep = np.zeros(count, bool)
        keep[rng.choice(count, size=max_points, replace=False)] = True
    else:
        keep = np.ones(count, bool)
        keep[rng.choice(count, size=count - max_points, replace=False)] = False
    return keep

"""The reference's depth-map clean-up: drop points hidden behind more confident views.

A point of image i that projects inside image j, lies in front of j's depth there by more than
``tol`` (relative) and is less confident than j's pixel contradicts j's view (j sees through the
place where it would be); its confidence is set to 0. All pixels are tested at once per ordered
pair of images; comparisons use the confidences before cleaning, so the result does not depend on
the order of the images (the reference updates in place while it loops). A pair whose views do
not overlap (no point of a 1-in-16 sample of image i lands in image j) is skipped, which makes
large sliding-window scenes cheap.
"""

from __future__ import annotations

import numpy as np


def _inside(pts: np.ndarray, K: np.ndarray, cam2world: np.ndarray, shape: tuple[int, int]):
    """``(inside, z, u, v)``: which world points project into an ``(H, W)`` image, in front."""
    cam = (pts - cam2world[:3, 3]) @ cam2world[:3, :3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(K[0, 0] * cam[:, 0] / z + K[0, 2])
        v = np.rint(K[1, 1] * cam[:, 1] / z + K[1, 2])
    inside = (z > 0) & (u >= 0) & (u < shape[1]) & (v >= 0) & (v < shape[0])
    return inside, z, u, v


def clean_confidence(
    pts_world: list[np.ndarray],
    depth: list[np.ndarray],
    K: list[np.ndarray],
    cam2world: list[np.ndarray],
    conf: list[np.ndarray],
    tol: float = 0.001,
) -> list[np.ndarray]:
    """Cleaned confidences.

    Args:
        pts_world: per image ``(H, W, 3)`` world points (NaN where unknown).
        depth: per image ``(H, W)`` z-depth; ``K``: ``(3, 3)``; ``cam2world``: ``(4, 4)``.
        conf: per image ``(H, W)`` confidences.

    Returns:
        per image ``(H, W)`` float32 confidences with contradicted points set to 0.
    """
    out = []
    for i, pts in enumerate(pts_world):
        flat = pts.reshape(-1, 3).astype(np.float64)
        conf_i = conf[i].reshape(-1)
        bad = np.zeros(len(flat), bool)
        sample = pts[::4, ::4].reshape(-1, 3).astype(np.float64)
        for j in range(len(pts_world)):
            if j == i or not _inside(sample, K[j], cam2world[j], depth[j].shape)[0].any():
                continue
            h, w = depth[j].shape
            inside, z, u, v = _inside(flat, K[j], cam2world[j], (h, w))
            idx = np.flatnonzero(inside)
            pix = v[idx].astype(np.int64) * w + u[idx].astype(np.int64)
            occluding_depth = depth[j].reshape(-1)[pix]
            more_confident = conf_i[idx] < conf[j].reshape(-1)[pix]
            hidden = (z[idx] < (1 - tol) * occluding_depth) & more_confident
            bad[idx[hidden]] = True
        out.append(np.where(bad, 0.0, conf_i).reshape(conf[i].shape).astype(np.float32))
    return out

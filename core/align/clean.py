"""The reference's depth-map clean-up: drop points hidden behind more confident views.

A point of image i that projects inside image j, lies in front of j's depth there by more than
``tol`` (relative) and is less confident than j's pixel contradicts j's view (j sees through the
place where it would be); its confidence is set to 0. All pixels are tested at once per ordered
pair of images; comparisons use the confidences before cleaning, so the result does not depend on
the order of the images (the reference updates in place while it loops).
"""

from __future__ import annotations

import numpy as np


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
        for j in range(len(pts_world)):
            if j == i:
                continue
            h, w = depth[j].shape
            cam = (flat - cam2world[j][:3, 3]) @ cam2world[j][:3, :3]
            z = cam[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.rint(K[j][0, 0] * cam[:, 0] / z + K[j][0, 2])
                v = np.rint(K[j][1, 1] * cam[:, 1] / z + K[j][1, 2])
            inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            idx = np.flatnonzero(inside)
            pix = v[idx].astype(np.int64) * w + u[idx].astype(np.int64)
            occluding_depth = depth[j].reshape(-1)[pix]
            hidden = (z[idx] < (1 - tol) * occluding_depth) & (conf_i[idx] < conf[j].reshape(-1)[pix])
            bad[idx[hidden]] = True
        out.append(np.where(bad, 0.0, conf_i).reshape(conf[i].shape).astype(np.float32))
    return out

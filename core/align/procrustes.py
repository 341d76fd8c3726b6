"""Robust weighted similarity registration (Umeyama with scale, iteratively reweighted)."""

from __future__ import annotations

import numpy as np


def fit_similarity(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray, iterations: int = 5,
    with_scale: bool = True,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``dst ~ s * R @ src + t`` minimising ``sum weight * ||residual||``.

    The unsquared (robust) cost is minimised by iteratively reweighted least squares: each pass is
    a closed-form weighted Umeyama fit, and the weights are divided by the residual of the previous
    fit (floored at a small fraction of the point spread, so exact data stay exact).

    Args:
        src, dst: ``(M, 3)`` float points.
        weight: ``(M,)`` non-negative weights (0 = ignore).
        iterations: reweighting passes (1 = plain weighted least squares).
        with_scale: fit ``s``; else ``s = 1``.

    Returns:
        ``(s, R, t)``: float, ``(3, 3)`` and ``(3,)`` float64.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    base = np.asarray(weight, np.float64)
    w = base
    s, R, t = 1.0, np.eye(3), np.zeros(3)
    floor = None
    for _ in range(max(iterations, 1)):
        total = w.sum()
        if not total > 0:
            break
        mu_src = w @ src / total
        mu_dst = w @ dst / total
        a, b = src - mu_src, dst - mu_dst
        cov = (b * w[:, None]).T @ a / total
        U, S, Vt = np.linalg.svd(cov)
        D = np.eye(3)
        D[2, 2] = np.sign(np.linalg.det(U @ Vt)) or 1.0
        R = U @ D @ Vt
        var_src = (w * (a * a).sum(1)).sum() / total
        s = float((S * np.diag(D)).sum() / var_src) if with_scale and var_src > 0 else 1.0
        t = mu_dst - s * R @ mu_src
        residual = np.linalg.norm(s * src @ R.T + t - dst, axis=1)
        if floor is None:
            spread = np.sqrt((w * (b * b).sum(1)).sum() / total)
            floor = 1e-6 * spread + 1e-300
        w = base / np.maximum(residual, floor)
    return s, R, t

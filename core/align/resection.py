"""Camera from 3D-2D correspondences (robust DLT), for images with no pointmap of their own."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def resect_camera(
    pts_world: np.ndarray, uv: np.ndarray, weight: np.ndarray, iterations: int = 10
) -> tuple[float, np.ndarray]:
    """Focal and cam2world of a pinhole camera that sees ``pts_world`` at pixels ``uv``.

    A direct linear transform on normalised coordinates, reweighted by the reprojection error
    (robust, no RANSAC needed for the few outliers of a pointmap), then split into ``K [R | t]``.

    Args:
        pts_world: ``(M, 3)`` world points, ``uv``: ``(M, 2)`` pixels, ``weight``: ``(M,)``.

    Returns:
        ``(f, cam2world)``: the mean of fx and fy, and a ``(4, 4)`` float64 OpenCV camera-to-world.
    """
    X = np.asarray(pts_world, np.float64)
    x = np.asarray(uv, np.float64)
    ok = (weight > 0) & np.isfinite(X).all(1)
    X, x, base = X[ok], x[ok], np.asarray(weight, np.float64)[ok]
    mx, sx = x.mean(0), x.std() + 1e-12
    mX, sX = X.mean(0), np.sqrt(((X - X.mean(0)) ** 2).sum(1).mean()) + 1e-12
    Tx = np.array([[1 / sx, 0, -mx[0] / sx], [0, 1 / sx, -mx[1] / sx], [0, 0, 1]])
    Xn = np.c_[(X - mX) / sX, np.ones(len(X))]
    xn = (x - mx) / sx
    zeros = np.zeros_like(Xn)
    A = np.concatenate(
        [np.c_[Xn, zeros, -xn[:, :1] * Xn], np.c_[zeros, Xn, -xn[:, 1:] * Xn]], axis=0
    )
    w = base
    for _ in range(iterations):
        sw = np.sqrt(np.r_[w, w])[:, None]
        P = np.linalg.svd(A * sw, full_matrices=False)[2][-1].reshape(3, 4)
        proj = Xn @ P.T
        residual = np.linalg.norm(proj[:, :2] / proj[:, 2:] - xn, axis=1)
        w = base / np.maximum(residual, 1e-6)
    TX = np.eye(4)
    TX[:3, :3] /= sX
    TX[:3, 3] = -mX / sX
    P = np.linalg.inv(Tx) @ P @ TX
    K, R = scipy.linalg.rq(P[:, :3])
    signs = np.sign(np.diag(K))
    K, R = K * signs, signs[:, None] * R
    t = np.linalg.solve(K, P[:, 3])
    if np.linalg.det(R) < 0:
        R, t = -R, -t
    cam2world = np.eye(4)
    cam2world[:3, :3] = R.T
    cam2world[:3, 3] = -R.T @ t
    return float((K[0, 0] + K[1, 1]) / (2 * K[2, 2])), cam2world

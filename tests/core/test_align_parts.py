"""The alignment's closed-form pieces, each against an independent float64 computation."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

import synthetic_pairs
from core.align.clean import clean_confidence
from core.align.depth import solve_depth
from core.align.focal import focal_from_pointmap
from core.align.procrustes import fit_similarity
from core.align.resection import resect_camera
from core.align.so3 import rotation_from_vector


def test_rotation_from_vector_matches_scipy_and_is_smooth_at_zero():
    rng = np.random.default_rng(0)
    omega = rng.normal(size=(20, 3)) * np.r_[np.full(10, 1.0), np.full(10, 1e-6)][:, None]
    ours = rotation_from_vector(torch.from_numpy(omega)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(omega).as_matrix(), atol=1e-12)
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    rotation_from_vector(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_robust_similarity_recovers_the_truth_despite_outliers():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(500, 3))
    R = Rotation.from_rotvec([0.3, -0.5, 1.0]).as_matrix()
    dst = 2.5 * src @ R.T + [1.0, -2.0, 0.5]
    s, R_fit, t = fit_similarity(src, dst, np.ones(500))
    np.testing.assert_allclose([s, *R_fit.ravel(), *t], [2.5, *R.ravel(), 1.0, -2.0, 0.5],
                               atol=1e-10)
    dst_bad = dst.copy()
    dst_bad[:50] += rng.normal(size=(50, 3)) * 5  # 10 % gross outliers
    s, R_fit, t = fit_similarity(src, dst_bad, np.ones(500), iterations=20)
    s_ls = synthetic_pairs.umeyama(src, dst_bad)[0]
    assert abs(s - 2.5) < 0.01 < abs(s_ls - 2.5)
    assert np.degrees(Rotation.from_matrix(R_fit @ R.T).magnitude()) < 0.5


def test_focal_from_own_pointmap_is_exact_and_robust():
    v, u = np.mgrid[0:30, 0:40].astype(float)
    uv = np.stack([u.ravel(), v.ravel()], 1)
    z = 2 + np.sin(u.ravel() / 5)
    pp = np.array([20.0, 15.0])
    pts = np.c_[(uv - pp) / 55.0 * z[:, None], z]
    assert abs(focal_from_pointmap(pts, uv, pp, np.ones(len(z))) - 55.0) < 1e-9
    pts[::10, :2] *= 3  # 10 % outliers
    assert abs(focal_from_pointmap(pts, uv, pp, np.ones(len(z))) - 55.0) < 0.5


def test_resection_recovers_pose_and_focal():
    scene = synthetic_pairs.make_scene(2, [(0, 1)], noise=0, outliers=0, seed=2)
    v, u = np.mgrid[0:48, 0:64].astype(float)
    uv = np.stack([u.ravel(), v.ravel()], 1)
    f, cam2world = resect_camera(scene.pts3d_world[1].reshape(-1, 3), uv, np.ones(len(uv)))
    assert abs(f / scene.K[1, 0, 0] - 1) < 1e-6
    np.testing.assert_allclose(cam2world, scene.cam2world[1], atol=1e-6)


def test_depth_solve_minimises_the_robust_cost():
    rng = np.random.default_rng(3)
    origin = torch.zeros(4, 3, dtype=torch.float64)
    rays = torch.tensor(rng.normal(size=(4, 3)) * 0.2 + [0, 0, 1])
    pixel = torch.arange(4).repeat(5)
    true_depth = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    noisy_depth = true_depth[pixel] + torch.tensor(rng.normal(size=20)) * 0.1
    targets = origin[pixel] + noisy_depth[:, None] * rays[pixel] \
        + torch.tensor(rng.normal(size=(20, 3))) * 0.05
    weight = torch.tensor(rng.uniform(0.5, 2, size=20))
    depth = solve_depth(origin, rays, targets, weight, pixel, eps=1e-9, iterations=100).numpy()
    for p in range(4):  # brute force: the 1-D cost on a fine grid
        grid = np.linspace(0, 6, 60001)
        points = grid[:, None] * rays[p].numpy()
        sel = (pixel == p).numpy()
        cost = (weight.numpy()[sel] * np.linalg.norm(
            points[:, None] - targets.numpy()[sel][None], axis=-1)).sum(1)
        assert abs(depth[p] - grid[np.argmin(cost)]) < 2e-3


def test_clean_drops_points_in_front_of_a_more_confident_view():
    K = np.array([[50.0, 0, 10], [0, 50, 10], [0, 0, 1]])
    v, u = np.mgrid[0:20, 0:20].astype(float)
    rays = np.stack([(u - 10) / 50, (v - 10) / 50, np.ones_like(u)], -1)
    depth = [np.full((20, 20), 4.0), np.full((20, 20), 4.0)]
    depth[0][:5] = 1.0  # a floater in image 0, in front of image 1's surface
    pts = [rays * d[..., None] for d in depth]
    conf = [np.full((20, 20), 2.0), np.full((20, 20), 5.0)]
    out = clean_confidence(pts, depth, [K, K], [np.eye(4), np.eye(4)], conf)
    assert (out[0][:5] == 0).all() and (out[0][5:] == 2.0).all()
    np.testing.assert_array_equal(out[1], conf[1])  # behind image 0: not contradicted

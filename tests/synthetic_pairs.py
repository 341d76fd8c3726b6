"""Synthetic pairwise predictions with known cameras, for the global-alignment tests and benchmark.

A textured bumpy height field ``z = Z0 + bumps(x, y)`` is seen by ``n`` cameras standing near the
plane ``z = 0`` and looking at it (OpenCV axes, varied focal lengths of 0.7-1.4 times the image
size, principal point at ``(W/2, H/2)`` as DUSt3R assumes). For every directed edge ``(i, j)`` the
"network" output is made the way DUSt3R defines it: both images' points in **camera i's frame**,
multiplied by a random per-edge scale, with per-pixel noise proportional to depth, a share of
outlier pixels, and raw confidences (>= 1) that fall as the pixel's noise rises.

Usage::

    scene = synthetic_pairs.make_scene(6, make_pairs(6, "complete"), seed=0)
    scene.preds      # core.predictions.PairPredictions
    scene.K, scene.cam2world, scene.pts3d_world, scene.depth   # ground truth
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.predictions import PairPredictions, ViewInfo
from core.synthetic import look_at_cam2world

SURFACE_Z = 3.0
"""Mean distance of the surface from the camera plane (world units)."""




@dataclass
class SyntheticScene:
    """Pair predictions and the truth they were made from.

    Attributes:
        preds: the pairwise predictions (what the network would write).
        K: ``(N, 3, 3)`` float64 true intrinsics on the map grid.
        cam2world: ``(N, 4, 4)`` float64 true camera-to-world, OpenCV axes.
        pts3d_world: ``(N, H, W, 3)`` float64 true world point of every pixel.
        depth: ``(N, H, W)`` float64 true z-depth of every pixel.
        edge_scale: ``(E,)`` float64 scale applied to each edge's pointmaps.
    """

    preds: PairPredictions
    K: np.ndarray
    cam2world: np.ndarray
    pts3d_world: np.ndarray
    depth: np.ndarray
    edge_scale: np.ndarray


class _Surface:
    """A height field ``z = Z0 + sum of random sinusoids`` with a colour texture."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.freq = rng.uniform(0.8, 2.0, size=(4, 2)) * rng.choice([-1, 1], size=(4, 2))
        self.phase = rng.uniform(0, 2 * np.pi, size=4)
        self.amp = rng.uniform(0.02, 0.05, size=4)

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        arg = x[..., None] * self.freq[:, 0] + y[..., None] * self.freq[:, 1] + self.phase
        return SURFACE_Z + (self.amp * np.sin(arg)).sum(-1)

    def intersect(self, origin: np.ndarray, rays: np.ndarray) -> np.ndarray:
        """Ray parameter ``t`` where ``origin + t * rays`` meets the surface (fixed point)."""
        t = (SURFACE_Z - origin[2]) / rays[..., 2]
        for _ in range(60):
            p = origin + t[..., None] * rays
            t = (self.height(p[..., 0], p[..., 1]) - origin[2]) / rays[..., 2]
        return t

    def colour(self, pts: np.ndarray) -> np.ndarray:
        x, y = pts[..., 0], pts[..., 1]
        rgb = np.stack(
            [np.sin(7 * x) * np.cos(5 * y), np.sin(11 * y + 1), np.cos(9 * (x + y))], axis=-1
        )
        return np.clip(127.5 + 120 * rgb, 0, 255).astype(np.uint8)


def make_cameras(n: int, height: int, width: int, rng: np.random.Generator, same_focal=False):
    """Random cameras around the origin looking at the surface (one focal if ``same_focal``).

    Returns:
        ``(K, cam2world)``: ``(n, 3, 3)`` and ``(n, 4, 4)`` float64.
    """
    size = max(height, width)
    K = np.zeros((n, 3, 3))
    cam2world = np.tile(np.eye(4), (n, 1, 1))
    shared = rng.uniform(0.7, 1.4) * size
    for k in range(n):
        f = shared if same_focal else rng.uniform(0.7, 1.4) * size
        K[k] = [[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]
        radius, angle = 0.8 * np.sqrt(rng.uniform(0.1, 1.0)), rng.uniform(0, 2 * np.pi)
        centre = np.array([radius * np.cos(angle), radius * np.sin(angle), rng.uniform(-0.3, 0.3)])
        target = np.array([*rng.uniform(-0.4, 0.4, size=2), SURFACE_Z])
        cam2world[k, :3, :3] = look_at_cam2world(  # this world is y-down
            centre, target, up=(0.0, -1.0, 0.0), roll=rng.uniform(-0.2, 0.2))[:3, :3]
        cam2world[k, :3, 3] = centre
    return K, cam2world


def make_scene(
    n_images: int,
    pairs,
    height: int = 48,
    width: int = 64,
    noise: float = 0.01,
    outliers: float = 0.05,
    seed: int = 0,
    dtype=np.float32,
    same_focal: bool = False,
) -> SyntheticScene:
    """Make a scene and the predictions of every directed edge in ``pairs``.

    Args:
        n_images: number of cameras.
        pairs: directed edges ``(i, j)`` (``(0, 0)`` for a single image, as the reference does).
        height, width: map grid of every image.
        noise: relative depth noise: a pixel's 3D point moves by ``noise * u * depth`` (Gaussian,
            isotropic) where ``u`` in [0.3, 3] is the pixel's noise level; its confidence is
            ``1 + 5 / u``.
        outliers: share of pixels per edge side moved along their ray by a factor in [0.6, 1.6]
            plus 5 % jitter, with confidences of 1..4 (some above the default threshold of 3).
        seed: everything is drawn from ``numpy.random.default_rng(seed)``.
        same_focal: all cameras share one focal length.
        dtype: dtype of the stored pointmaps and confidences.
    """
    rng = np.random.default_rng(seed)
    surface = _Surface(rng)
    K, cam2world = make_cameras(n_images, height, width, rng, same_focal)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    pts3d_world = np.zeros((n_images, height, width, 3))
    depth = np.zeros((n_images, height, width))
    colors = []
    for k in range(n_images):
        rays_cam = pix @ np.linalg.inv(K[k]).T  # z component 1: t is the z-depth
        rays_world = rays_cam @ cam2world[k, :3, :3].T
        t = surface.intersect(cam2world[k, :3, 3], rays_world)
        depth[k] = t
        pts3d_world[k] = cam2world[k, :3, 3] + t[..., None] * rays_world
        colors.append(surface.colour(pts3d_world[k]))
    photo_from_map = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])
    views = [
        ViewInfo(f"synthetic_{k:03d}.png", (2 * width, 2 * height), photo_from_map, colors[k])
        for k in range(n_images)
    ]

    def observe(points_cam: np.ndarray):
        """Noisy scaled pointmap and confidence of one edge side (camera-i frame)."""
        dist = np.linalg.norm(points_cam, axis=-1, keepdims=True)
        level = np.exp(rng.uniform(np.log(0.3), np.log(3.0), size=dist.shape))
        pts = points_cam + noise * level * dist * rng.standard_normal(points_cam.shape)
        conf = 1.0 + 5.0 / level[..., 0]
        bad = rng.random(dist.shape[:2]) < outliers
        n_bad = int(bad.sum())
        pts[bad] = points_cam[bad] * rng.uniform(0.6, 1.6, size=(n_bad, 1)) + 0.05 * dist[
            bad
        ] * rng.standard_normal((n_bad, 3))
        conf[bad] = rng.uniform(1.0, 4.0, size=n_bad)
        return pts, conf

    edges = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
    scales = np.exp(rng.uniform(-0.7, 0.7, size=len(edges)))
    fields: dict[str, list[np.ndarray]] = {"pts3d_i": [], "conf_i": [], "pts3d_j": [], "conf_j": []}
    for e, (i, j) in enumerate(edges):
        world2cam = np.linalg.inv(cam2world[i])
        for side, k in (("i", i), ("j", j)):
            points_cam = pts3d_world[k] @ world2cam[:3, :3].T + world2cam[:3, 3]
            pts, conf = observe(points_cam)
            fields[f"pts3d_{side}"].append((scales[e] * pts).astype(dtype))
            fields[f"conf_{side}"].append(conf.astype(dtype))
    preds = PairPredictions(views=views, edges=edges, model="synthetic", **fields)
    return SyntheticScene(preds, K, cam2world, pts3d_world, depth, scales)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` (float64, Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = (S * np.diag(D)).sum() / (a * a).sum(1).mean()
    return s, R, mu_d - s * R @ mu_s


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _rotation_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def errors(scene: SyntheticScene, K, cam2world, pts3d_world, ids=None) -> dict[str, float]:
    """Errors of estimated cameras and points against the truth.

    Args:
        K, cam2world: per estimated image ``(3, 3)`` and ``(4, 4)``.
        pts3d_world: per estimated image ``(H, W, 3)`` (NaN allowed).
        ids: the true image index of each estimated image (default: the same order).

    Returns:
        ``focal`` median relative focal error; ``rotation`` / ``translation`` median relative
        rotation and translation-direction errors over all camera pairs (degrees), ``*_max``
        their maxima; ``points`` median world-point error after a float64 similarity alignment,
        relative to the scene's median depth.
    """
    ids = list(range(len(K))) if ids is None else list(ids)
    focal = [abs(K[a][0, 0] - scene.K[k, 0, 0]) / scene.K[k, 0, 0] for a, k in enumerate(ids)]
    rot, trans = [], []
    for a in range(len(ids)):
        for b in range(len(ids)):
            if a == b:
                continue
            Ta, Tb = scene.cam2world[ids[a]], scene.cam2world[ids[b]]
            Ea, Eb = np.asarray(cam2world[a]), np.asarray(cam2world[b])
            rel_true = Ta[:3, :3].T @ Tb[:3, :3]
            rel_est = Ea[:3, :3].T @ Eb[:3, :3]
            rot.append(_rotation_deg(rel_true.T @ rel_est))
            trans.append(_angle_deg(Ta[:3, :3].T @ (Tb[:3, 3] - Ta[:3, 3]),
                                    Ea[:3, :3].T @ (Eb[:3, 3] - Ea[:3, 3])))
    est = np.concatenate([np.asarray(p, np.float64).reshape(-1, 3) for p in pts3d_world])
    true = np.concatenate([scene.pts3d_world[k].reshape(-1, 3) for k in ids])
    ok = np.isfinite(est).all(1)
    s, R, t = umeyama(est[ok], true[ok])
    point_err = np.linalg.norm(s * est[ok] @ R.T + t - true[ok], axis=1)
    out = {"focal": float(np.median(focal)), "focal_max": float(np.max(focal)),
           "points": float(np.median(point_err) / np.median(scene.depth[ids]))}
    if rot:
        out.update(rotation=float(np.median(rot)), rotation_max=float(np.max(rot)),
                   translation=float(np.median(trans)), translation_max=float(np.max(trans)))
    return out


def result_errors(scene: SyntheticScene, result, ids=None) -> dict[str, float]:
    """:func:`errors` of a :class:`core.result.SceneResult`."""
    return errors(scene, [im.K for im in result.images], [im.cam2world for im in result.images],
                  [im.pts3d_world for im in result.images], ids)

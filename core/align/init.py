"""Initial cameras and pairwise similarities from the maximum-confidence spanning tree.

As the reference (``dust3r_reference.md`` §2.6): the strongest edge defines the world (camera i
of that edge); tree edges are chained by robust weighted Procrustes with scale, each placing the
pointmap of its new image in the world. Unlike the reference:

* each image's focal comes from its OWN pointmap (its best edge where it is the first image), never
  from another image's (dust3r issue #164);
* each camera's pose is the similarity from its own pointmap to its world points (closed form);
  only an image that is never the first of an edge falls back to a robust resection;
* every edge's similarity uses both of its pointmaps.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from .focal import focal_from_pointmap, usable_focal
from .graph import spanning_tree
from .model import SceneState
from .observations import Observations
from .procrustes import fit_similarity
from .resection import resect_camera

log = logging.getLogger(__name__)


def _side_blocks(obs: Observations) -> dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]]:
    """``(edge, first) -> (pts (m, 3), weight (m,))``."""
    return {(s.edge, s.first): (obs.pts[s.start:s.stop], obs.weight[s.start:s.stop])
            for s in obs.sides}


def edge_scores(obs: Observations, n_edges: int) -> np.ndarray:
    """``(E,)`` mean raw confidence of side i times that of side j (the reference's score)."""
    score = np.ones(n_edges)
    for s in obs.sides:
        conf = obs.conf[s.start:s.stop]
        valid = conf > 0
        score[s.edge] *= conf[valid].mean() if valid.any() else 0.0
    return score


def place_pointmaps(obs: Observations, edges: np.ndarray, score: np.ndarray) -> tuple[int, dict]:
    """World points of every image on its pooled grid by chaining the spanning tree.

    Returns:
        ``(root, pts3d)``: the image whose camera frame is the world, and image -> ``(m, 3)``.
    """
    n_images = len(obs.rows)
    blocks = _side_blocks(obs)
    tree = spanning_tree(n_images, edges, score)
    if not tree:  # a single image (paired with itself)
        e = int(np.argmax(score))
        return int(edges[e, 0]), {int(edges[e, 0]): blocks[(e, True)][0]}
    first = tree[0]
    i, j = (int(v) for v in edges[first])
    pts3d = {i: blocks[(first, True)][0], j: blocks[(first, False)][0]}
    queue = deque(tree[1:])
    while queue:
        e = queue.popleft()
        i, j = (int(v) for v in edges[e])
        if i in pts3d or j in pts3d:
            known, new, known_first = (i, j, True) if i in pts3d else (j, i, False)
            src, w = blocks[(e, known_first)]
            s, R, t = fit_similarity(src, pts3d[known], w)
            pts3d[new] = s * blocks[(e, not known_first)][0] @ R.T + t
        else:
            queue.append(e)
    return int(edges[first, 0]), pts3d


def initialise(
    obs: Observations,
    edges: np.ndarray,
    known_focal: np.ndarray,
    known_pp: np.ndarray,
    default_pp: np.ndarray,
    shared_focal: bool,
    fallback_focal: np.ndarray,
) -> tuple[SceneState, int, list[int]]:
    """Cameras (pose, focal, principal point) and edge similarities in the root camera's frame.

    Args:
        obs: the sampled observations.
        edges: ``(E, 2)`` edges in the observations' numbering.
        known_focal: ``(N, 2)`` given ``(fx, fy)`` on the map grid, NaN where unknown.
        known_pp: ``(N, 2)`` given principal points, NaN where unknown.
        default_pp: ``(N, 2)`` principal points to use otherwise.
        shared_focal: give all images of unknown focal the median of their estimates.
        fallback_focal: ``(N,)`` focal (map-grid pixels) of an image whose estimate is not
            positive and finite (its pointmap contradicts its pixels): the optimiser keeps a
            focal's sign, so such an estimate could never become a camera.

    Returns:
        ``(state, root, replaced)``: ``replaced`` lists the images given ``fallback_focal``.
    """
    n_images = len(obs.rows)
    score = edge_scores(obs, len(edges))
    root, pts3d = place_pointmaps(obs, edges, score)
    blocks = _side_blocks(obs)
    pp = np.where(np.isfinite(known_pp), known_pp, default_pp)
    focal = known_focal.copy()
    cam_R = np.tile(np.eye(3), (n_images, 1, 1))
    cam_c = np.zeros((n_images, 3))
    estimated, replaced = [], []
    for n in range(n_images):
        uv = obs.uv[obs.image_pixels(n)]
        own = [e for e in range(len(edges)) if edges[e, 0] == n]
        if own:
            best = max(own, key=lambda e: score[e])
            pts_cam, w = blocks[(best, True)]
            if n != root:  # the root's camera frame is the world
                _, cam_R[n], cam_c[n] = fit_similarity(pts_cam, pts3d[n], w)
            if not np.isfinite(focal[n]).all():
                focal[n] = focal_from_pointmap(pts_cam, uv, pp[n], w)
                estimated.append(n)
        else:
            # Never the first image of an edge: no pointmap in its own frame.
            w = np.max([blocks[(s.edge, s.first)][1] for s in obs.sides if s.image == n], axis=0)
            f, c2w = resect_camera(pts3d[n], uv, w)
            cam_R[n], cam_c[n] = c2w[:3, :3], c2w[:3, 3]
            if not np.isfinite(focal[n]).all():
                focal[n] = f
                estimated.append(n)
            log.info("Image %d is never the first of a pair; placed by resection.", n)
        if n in estimated and not usable_focal(focal[n, 0]):
            log.warning("Image %d: estimated focal %s replaced by %.1f px.", n, focal[n, 0],
                        fallback_focal[n])
            focal[n] = fallback_focal[n]
            replaced.append(n)
    if shared_focal and estimated:
        focal[estimated] = np.median(focal[estimated, 0])
    edge_R = np.zeros((len(edges), 3, 3))
    edge_t = np.zeros((len(edges), 3))
    edge_s = np.zeros(len(edges))
    for e, (i, j) in enumerate(edges):
        src = np.concatenate([blocks[(e, True)][0], blocks[(e, False)][0]])
        w = np.concatenate([blocks[(e, True)][1], blocks[(e, False)][1]])
        dst = np.concatenate([pts3d[i], pts3d[j]])
        edge_s[e], edge_R[e], edge_t[e] = fit_similarity(src, dst, w)
    state = SceneState(cam_R, cam_c, focal, pp, edge_R, edge_t, edge_s)
    return state, root, replaced


def _transform(state: SceneState, s: float, R: np.ndarray, t: np.ndarray) -> None:
    """Apply the world similarity ``x -> s R x + t`` to ``state`` in place."""
    state.cam_R = R @ state.cam_R
    state.cam_c = s * state.cam_c @ R.T + t
    state.edge_R = R @ state.edge_R
    state.edge_t = s * state.edge_t @ R.T + t
    state.edge_s = s * state.edge_s


def _centre_scale(c_init: np.ndarray, c_known: np.ndarray) -> tuple[float | None, bool]:
    """Scale taking the (rotated) initial camera centres ``(K, 3)`` to the known ones ``(K, 3)``.

    The least-squares scale ``(a . b) / (a . a)`` of the centred centres when it is positive.
    When it is not (the estimate places the cameras contrary to the known poses, e.g. mirrored),
    a similarity cannot fit both and a non-positive scale would flip every pairwise scale; the
    ratio of the centres' spreads ``sqrt(sum |b|^2 / sum |a|^2)`` keeps the scene's size instead.

    Returns:
        ``(s, contradicts)``: ``s`` is None when either set of centres has no spread (all at one
        place: they fix no scale); ``contradicts`` tells that the spread ratio was used.
    """
    a, b = c_init - c_init.mean(0), c_known - c_known.mean(0)
    spread_a, spread_b = (a * a).sum(), (b * b).sum()
    if not (spread_a > 0 and spread_b > 0):
        return None, False
    s = float((a * b).sum() / spread_a)
    if s > 0:
        return s, False
    return float(np.sqrt(spread_b / spread_a)), True


def fix_gauge(state: SceneState, known_poses: dict[int, np.ndarray], base_scale: float
              ) -> str | None:
    """Move ``state`` onto the known poses, or pin the pairwise scales to ``base_scale``.

    Two or more known poses at different places fix rotation, translation and scale (a similarity
    fitted on camera orientations and centres, its scale kept positive by :func:`_centre_scale`);
    one (or several at one place) fixes rotation and translation; the scale is then pinned to
    the geometric mean ``base_scale`` of the pairwise scales, as the reference.

    Returns:
        a warning for the user when the estimated cameras contradict the known poses, else None.
    """
    warning = None
    if known_poses:
        ids = sorted(known_poses)
        R_known = np.stack([known_poses[k][:3, :3] for k in ids])
        c_known = np.stack([known_poses[k][:3, 3] for k in ids])
        U, _, Vt = np.linalg.svd((R_known @ state.cam_R[ids].transpose(0, 2, 1)).sum(0))
        R = U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        c_init = state.cam_c[ids] @ R.T
        s, contradicts = _centre_scale(c_init, c_known) if len(ids) >= 2 else (None, False)
        if contradicts:
            warning = ("The cameras estimated from the photos are placed contrary to the known "
                       "poses (a similarity cannot map one onto the other); the known poses are "
                       "kept, but check that they belong to these photos in this order.")
            log.warning(warning)
        _transform(state, s or 1.0, R, c_known.mean(0) - (s or 1.0) * c_init.mean(0))
        for k in ids:
            state.cam_R[k], state.cam_c[k] = known_poses[k][:3, :3], known_poses[k][:3, 3]
        if s is not None:
            return warning
        anchor = c_known.mean(0)
    else:
        anchor = np.zeros(3)
    k = base_scale / np.exp(np.log(state.edge_s).mean())
    _transform(state, k, np.eye(3), (1 - k) * anchor)
    return warning

"""Global alignment of pairwise pointmaps: predictions in, reconstructed scene out."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import InputError, ReconstructionFailed
from ..predictions import PairPredictions
from ..progress import Progress
from ..result import ImageResult, SceneResult
from .clean import clean_confidence
from .depth import solve_depth
from .focal import focal_base, usable_focal
from .graph import connected_parts
from .init import fix_gauge, initialise
from .loss import AlignmentLoss
from .model import Freedom, SceneModel, SceneState
from .observations import Observations, build_observations, side_arrays
from .optimize import optimise
from .options import AlignOptions

log = logging.getLogger(__name__)

DTYPE = torch.float32
"""Precision of the camera optimisation (memory-bound: float32 is twice as fast)."""

EPS_RELATIVE = 1e-3
"""Smoothing of the unsquared distance, relative to the scene's median depth."""


def _usable_edges(preds: PairPredictions) -> tuple[list[int], list[str]]:
    """Edges with at least one finite point on each side, and warnings for the others."""
    keep, warnings = [], []
    for e, (i, j) in enumerate(preds.edges):
        ok = all(
            (np.isfinite(p).all(-1) & np.isfinite(c)).any()
            for p, c in ((preds.pts3d_i[e], preds.conf_i[e]), (preds.pts3d_j[e], preds.conf_j[e]))
        )
        if ok:
            keep.append(e)
        else:
            warnings.append(f"Pair ({i}, {j}) has no finite prediction and was ignored.")
    return keep, warnings


def _known_intrinsics(preds: PairPredictions, image_ids: list[int], options: AlignOptions):
    """``(N, 2)`` known ``(fx, fy)`` and ``(N, 2)`` principal points on the map grid (NaN unknown).

    Given values are in pixels of the original photo; ``photo_from_map`` converts them.
    """
    focal = np.full((len(image_ids), 2), np.nan)
    pp = np.full((len(image_ids), 2), np.nan)
    for n, k in enumerate(image_ids):
        map_from_photo = np.linalg.inv(preds.views[k].photo_from_map)
        K_photo = options.known_intrinsics[n] if options.known_intrinsics else None
        f_photo = options.known_focals[n] if options.known_focals else None
        if K_photo is not None:
            K_map = map_from_photo @ np.asarray(K_photo, float)
            focal[n] = K_map[0, 0], K_map[1, 1]
            pp[n] = K_map[0, 2], K_map[1, 2]
        elif f_photo is not None:
            focal[n] = f_photo * map_from_photo[0, 0], f_photo * map_from_photo[1, 1]
    return focal, pp


def _freedom(n: int, root: int, known_focal, known_pp, known_poses, options) -> Freedom:
    pose_free = np.ones(n, bool)
    if known_poses:
        pose_free[list(known_poses)] = False
    else:
        pose_free[root] = False  # the gauge: the root camera is the world frame
    focal_known = np.isfinite(known_focal).all(1)
    if options.shared_focal:
        group = np.where(focal_known, np.arange(1, n + 1), 0)
    else:
        group = np.arange(n)
    group_free = np.array([not focal_known[group == g].all() if (group == g).any() else False
                           for g in range(group.max() + 1)])
    pp_free = np.full(n, options.optimize_pp) & ~np.isfinite(known_pp).all(1)
    return Freedom(pose_free, group, group_free, pp_free)


def _tensors(obs: Observations, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {k: torch.from_numpy(getattr(obs, k)) for k in ("pixel_image", "obs_pixel", "obs_edge")}
    out.update({k: torch.from_numpy(getattr(obs, k)).to(dtype) for k in ("uv", "pts", "weight")})
    return out


def _median_depth(state: SceneState, obs: Observations) -> float:
    """Median distance of the initial targets from their cameras (the scene's size)."""
    pick = slice(None, None, max(1, len(obs.pts) // 20000))
    e, pix = obs.obs_edge[pick], obs.obs_pixel[pick]
    targets = state.edge_s[e, None] * np.einsum("kij,kj->ki", state.edge_R[e], obs.pts[pick])
    targets += state.edge_t[e]
    dist = np.linalg.norm(targets - state.cam_c[obs.pixel_image[pix]], axis=1)
    return float(np.median(dist[obs.weight[pick] > 0]))


def _full_resolution(preds, image_ids, edge_ids, obs, state, eps, n) -> tuple:
    """Depth ``(H, W)``, world points ``(H, W, 3)`` and max confidence of image ``n``.

    The robust closed-form depth of every pixel from all the edges that see the image, with the
    final cameras and similarities (float32: this is the memory-heavy full-resolution step).
    """
    h, w = preds.views[image_ids[n]].shape
    rows, cols = np.arange(h), np.arange(w)
    vv, uu = np.meshgrid(rows, cols, indexing="ij")
    pixel = np.stack([(uu.ravel() - state.pp[n, 0]) / state.focal[n, 0],
                      (vv.ravel() - state.pp[n, 1]) / state.focal[n, 1], np.ones(uu.size)], 1)
    rays = torch.from_numpy((pixel @ state.cam_R[n].T).astype(np.float32))
    centre = torch.from_numpy(state.cam_c[n].astype(np.float32))
    targets, weights, conf = [], [], np.zeros(h * w, np.float32)
    for side in (s for s in obs.sides if s.image == n):
        pts, wt, c = side_arrays(preds, edge_ids[side.edge], side.first, rows, cols, np.float32)
        e = side.edge
        sim = torch.from_numpy((state.edge_s[e] * state.edge_R[e]).T.astype(np.float32))
        offset = torch.from_numpy(state.edge_t[e].astype(np.float32))
        targets.append(torch.from_numpy(pts) @ sim + offset)
        weights.append(torch.from_numpy(wt))
        conf = np.maximum(conf, c)
    depth = solve_depth(centre.expand(h * w, 3), rays, torch.cat(targets), torch.cat(weights),
                        torch.arange(h * w).repeat(len(targets)), eps, iterations=10)
    pts = centre + depth[:, None] * rays
    return depth.numpy().reshape(h, w), pts.numpy().reshape(h, w, 3), conf.reshape(h, w)


def _add_warning(warnings: list[str], warning: str | None) -> None:
    if warning is not None and warning not in warnings:
        warnings.append(warning)


def _check_cameras(state: SceneState, files: list[str]) -> None:
    """Refuse cameras that cannot be saved or imported: a focal that is not positive and finite
    (Blender cannot make such a camera) or a pose with non-finite values."""
    for n, file in enumerate(files):
        if not all(usable_focal(f) for f in state.focal[n]):
            raise ReconstructionFailed(
                f"The alignment gave {file} an invalid focal length {state.focal[n].tolist()} px; "
                "its predictions are unusable. Give its focal length (known_focals) or leave the "
                "photo out.")
        if not (np.isfinite(state.cam_R[n]).all() and np.isfinite(state.cam_c[n]).all()):
            raise ReconstructionFailed(
                f"The alignment could not place the camera of {file} (non-finite pose); its "
                "predictions are unusable. Leave the photo out or give its pose (known_poses).")


def align(
    preds: PairPredictions, options: AlignOptions | None = None, progress: Progress | None = None
) -> SceneResult:
    """Put every pair's pointmaps in one world frame and recover the cameras.

    Args:
        preds: pairwise predictions (network output or a cache file).
        options: see :class:`AlignOptions`; per-image lists follow ``preds.views``.
        progress: receives stage ``"align"`` with ``iteration k/n, loss``; cancel raises
            :class:`~core.errors.Cancelled`.

    Returns:
        a :class:`SceneResult` (backend ``"dust3r"``, raw DUSt3R confidences). Images outside the
        largest connected part of the pair graph are listed in ``unregistered``.

    Raises:
        InputError: no usable pair; a per-image option list not of one entry per view.
        ReconstructionFailed: a camera or depth map that cannot be recovered.
    """
    options = options or AlignOptions()
    options.check_photo_count(len(preds.views))
    edge_ids, warnings = _usable_edges(preds)
    if not edge_ids:
        raise InputError("The pair predictions contain no usable pair; re-run the network.")
    edges_all = preds.edges[edge_ids]
    parts = connected_parts(len(preds.views), edges_all)
    image_ids = parts[0]
    unregistered = []
    if len(parts) > 1:
        left_out = [k for part in parts[1:] for k in part]
        names = ", ".join(preds.views[k].file for k in left_out)
        warnings.append(f"The pair graph is disconnected: {names} could not be connected to the "
                        f"other {len(image_ids)} images; add pairs (a larger window or the "
                        "complete graph) to include them.")
        unregistered = [{"file": preds.views[k].file,
                         "reason": "not connected to the largest group of images by any pair"}
                        for k in left_out]
        log.warning(warnings[-1])
    in_part = set(image_ids)
    edge_ids = [e for e in edge_ids if int(preds.edges[e, 0]) in in_part]
    index = {k: n for n, k in enumerate(image_ids)}
    edges = np.array([[index[int(i)], index[int(j)]] for i, j in preds.edges[edge_ids]])
    n = len(image_ids)
    sub = options.for_images(image_ids)
    if progress is not None:
        progress("align", 0.0, "initialising cameras")

    obs = build_observations(preds, image_ids, edge_ids, options.opt_pixels)
    known_focal, known_pp = _known_intrinsics(preds, image_ids, sub)
    shapes = [preds.views[k].shape for k in image_ids]
    default_pp = np.array([[w / 2, h / 2] for h, w in shapes])
    state, root, replaced = initialise(obs, edges, known_focal, known_pp, default_pp,
                                       options.shared_focal,
                                       np.array([focal_base(h, w) for h, w in shapes]))
    for k in replaced:
        warnings.append(f"The focal length of {preds.views[image_ids[k]].file} could not be "
                        "estimated from its pointmap (points behind the camera or inconsistent); "
                        "it starts from a 60 degree field of view. Give known_focals if the "
                        "result looks wrong.")
    known_poses = {k: np.asarray(m, float) for k, m in enumerate(sub.known_poses or ())
                   if m is not None}
    _add_warning(warnings, fix_gauge(state, known_poses, options.base_scale))
    length = _median_depth(state, obs)
    eps = EPS_RELATIVE * length

    if options.iterations > 0 and n > 2:
        # All poses known: they stay fixed. Some known: they would pull the scene's scale
        # towards an early estimate, so they are optimised too and the result is moved onto them
        # afterwards by a similarity.
        fixed_poses = known_poses if len(known_poses) == n else {}
        freedom = _freedom(n, root, known_focal, known_pp, fixed_poses, options)
        # Pin the pairwise scales where the initialisation put them (the known poses' units).
        base_scale = float(np.exp(np.log(state.edge_s).mean()))
        model = SceneModel(state, freedom, base_scale, length, DTYPE)
        optimise(model, AlignmentLoss(_tensors(obs, DTYPE), eps), options.iterations,
                 options.optimizer, options.step_size, options.schedule,
                 progress.sub(0.0, 0.8) if progress is not None else None)
        state = model.state()
        if known_poses:
            _add_warning(warnings, fix_gauge(state, known_poses, options.base_scale))
    _check_cameras(state, [preds.views[k].file for k in image_ids])

    depth, pts, conf = [], [], []
    for k in range(n):
        d, p, c = _full_resolution(preds, image_ids, edge_ids, obs, state, eps, k)
        depth.append(d)
        pts.append(p)
        conf.append(c)
        if progress is not None:
            progress("align", 0.8 + 0.15 * (k + 1) / n, f"depth maps {k + 1}/{n}")
    K = [state.intrinsics(k) for k in range(n)]
    cam2world = [state.cam2world(k) for k in range(n)]
    if options.clean_depth and n > 1:
        conf = clean_confidence(pts, depth, K, cam2world, conf)
    images = []
    for k, view_id in enumerate(image_ids):
        view = preds.views[view_id]
        finite = np.isfinite(depth[k])
        if not finite.any():
            raise ReconstructionFailed(f"No depth could be recovered for {view.file}.")
        images.append(ImageResult(
            file=view.file, photo_size=tuple(view.photo_size), K=K[k], cam2world=cam2world[k],
            photo_from_map=np.asarray(view.photo_from_map, float),
            pts3d_world=np.where(finite[..., None], pts[k], np.nan).astype(np.float32),
            conf=np.where(finite, conf[k], 0.0).astype(np.float32),
            colors=np.asarray(view.colors, np.uint8),
            depth=np.where(finite, depth[k], np.nan).astype(np.float32),
        ))
    if progress is not None:
        progress("align", 1.0, "aligned")
    # Known poses fix the units when their centres are not all at one place (see fix_gauge).
    fixed = len(known_poses) >= 2 and np.ptp([m[:3, 3] for m in known_poses.values()], 0).any()
    units = "given poses" if fixed else "arbitrary"
    return SceneResult(images=images, backend="dust3r", conf_kind="dust3r",
                       conf_threshold=options.conf_threshold, units=units,
                       unregistered=unregistered, warnings=warnings)

"""Dense depth for every image: plane-sweep multi-view stereo in torch (CPU, or CUDA when present).

For each reference image:

1. pick neighbour views that see the same part of the scene from a useful angle (score from probe
   points: the sparse points it sees, else points on its rays at a typical depth);
2. sweep fronto-parallel depth hypotheses, uniform in inverse depth over the image's depth range;
3. score each hypothesis per neighbour with normalised cross-correlation (NCC) between the reference
   window and the neighbour warped onto it, and keep the mean of the ``best_k`` lowest costs over
   neighbours (robust to a neighbour in which the point is occluded);
4. winner-take-all, sub-hypothesis parabola fit, then a small per-pixel sweep around it;
5. after all images: keep a pixel only if at least ``min_consistent`` neighbours' depth maps agree
   with it (forward-backward reprojection error and relative depth);
6. optionally fill textureless regions (blank walls) with the planes that most of the kept depths
   around and inside them lie on, its own and its neighbours' (:mod:`.plane_fill`), and keep the
   filled pixels that pass the same consistency check against the other images' filled maps.

Everything runs at a working resolution (long side ``resolution``), which is the result's map grid.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError
from ..progress import Progress
from .plane_fill import plane_fill

log = logging.getLogger(__name__)

_INVALID_COST = 2.0  # 1 - NCC lies in [0, 2]; invalid samples get the worst cost
_MIN_PARALLAX_DEG = 1.0  # views closer than this in angle cannot confirm a depth
_MIN_STD = 0.003  # grey-level std (0..1) below which a window is textureless (~0.8 grey levels)


@dataclass(frozen=True)
class MvsOptions:
    """Settings of the dense stage.

    Attributes:
        resolution: long side of the working grid (pixels); photos are never upscaled.
        num_hypotheses: depth planes of the main sweep (uniform in inverse depth).
        refine_hypotheses: per-pixel hypotheses of the second sweep around the first estimate
            (0 = no second sweep).
        num_neighbors: neighbour views swept per reference image.
        check_neighbors: neighbour views (best first, the swept ones included) whose depth maps
            may confirm a pixel; checking is cheap, so more views than swept raise coverage.
        best_k: NCC costs averaged per pixel (the lowest of the neighbours').
        window: NCC window side (odd, pixels of the working grid).
        min_consistent: neighbours whose depth must agree for a pixel to be kept.
        max_reproj_error: forward-backward reprojection error (working pixels) for agreement.
        max_rel_depth_error: relative depth difference for agreement.
        min_ncc: textured pixels whose best aggregated NCC is lower are dropped.
        smoothness: semi-global aggregation jump penalty ``P2`` in NCC-cost units (0 = plain
            winner-take-all). Untextured pixels then get depth from their surroundings and are
            kept only if that depth is geometrically consistent across views.
        threads: torch CPU threads while the stage runs (0 = leave torch's setting). On a CPU
            shared with other jobs, 1 avoids threads spinning against each other.
        plane_fill: fill textureless regions with planes fitted to the kept depths around them,
            the image's own and its neighbours' (step 6); filled pixels must still pass the
            consistency check, and their confidence counts their NCC as 0 (it rests on the
            agreeing neighbours alone).
        fill_max_rel_depth_error, fill_max_reproj_error: agreement tolerances of that check.
    """

    resolution: int = 400
    num_hypotheses: int = 64
    refine_hypotheses: int = 8
    num_neighbors: int = 6
    check_neighbors: int = 8
    best_k: int = 2
    window: int = 7
    min_consistent: int = 2
    max_reproj_error: float = 1.0
    max_rel_depth_error: float = 0.01
    min_ncc: float = 0.3
    smoothness: float = 0.5
    threads: int = 0
    plane_fill: bool = True
    fill_max_rel_depth_error: float = 0.05
    fill_max_reproj_error: float = 3.0

    def __post_init__(self) -> None:
        if self.resolution < 32 or self.num_hypotheses < 4 or self.num_neighbors < 1:
            raise InputError(
                "Dense options need resolution >= 32, num_hypotheses >= 4 and num_neighbors >= 1."
            )
        if self.window < 3 or self.window % 2 == 0:
            raise InputError(f"Dense option window={self.window} must be an odd number >= 3.")
        counts_ok = min(self.best_k, self.min_consistent) >= 1
        if not counts_ok or min(self.refine_hypotheses, self.threads) < 0:
            raise InputError(
                "Dense options best_k and min_consistent must be >= 1, refine_hypotheses and "
                "threads >= 0."
            )


@dataclass
class DenseView:
    """Dense output for one image on its working grid ``(H, W)``.

    Attributes:
        K: ``(3, 3)`` float64 intrinsics on the working grid.
        photo_from_map: ``(3, 3)`` float64 affine, working-grid pixel -> photo pixel.
        depth: ``(H, W)`` float32 z-depth, NaN where rejected.
        conf: ``(H, W)`` float32 in 0..1 (0 where rejected).
        pts3d_world: ``(H, W, 3)`` float32 world points, NaN where rejected.
        colors: ``(H, W, 3)`` uint8 RGB of the working image.
    """

    K: np.ndarray
    photo_from_map: np.ndarray
    depth: np.ndarray
    conf: np.ndarray
    pts3d_world: np.ndarray
    colors: np.ndarray


def working_grid(
    photo_size: tuple[int, int], resolution: int
) -> tuple[tuple[int, int], np.ndarray]:
    """Working size ``(W, H)`` (long side ``resolution``, never upscaled) and ``photo_from_map``."""
    w, h = photo_size
    scale = min(1.0, resolution / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    sx, sy = w / size[0], h / size[1]
    # Pixel-centre convention: u_photo = sx * (u_map + 0.5) - 0.5.
    photo_from_map = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return size, photo_from_map


def box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over ``window x window`` boxes (zero outside the image) of ``(..., H, W)``, same shape.

    Integral-image differences: about 3x faster than ``avg_pool2d`` on CPU. Inputs should be
    centred near 0 so float32 running sums stay precise.
    """
    lo = window // 2 + 1
    *lead, h, w = x.shape
    padded = x.new_zeros(*lead, h + window, w + window)
    padded[..., lo : lo + h, lo : lo + w] = x
    padded.cumsum_(-1)
    rows = padded[..., window:] - padded[..., :-window]
    rows.cumsum_(-2)
    return rows[..., window:, :] - rows[..., :-window, :]


@dataclass
class RefWindows:
    """Window statistics of a (centred) grey reference image, computed once per image.

    Attributes:
        image: ``(H, W)`` grey values minus 0.5.
        count: ``(H, W)`` pixels per window (fewer at the border).
        mean, std: ``(H, W)`` window mean and standard deviation.
    """

    image: torch.Tensor
    count: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, gray: torch.Tensor, window: int) -> RefWindows:
        image = gray - 0.5
        count = box_sum(torch.ones_like(image), window)
        mean = box_sum(image, window) / count
        var = (box_sum(image * image, window) / count - mean * mean).clamp_min(0)
        return cls(image, count, mean, var.sqrt())


def ncc_cost(
    ref: RefWindows, warped: torch.Tensor, valid: torch.Tensor, window: int
) -> torch.Tensor:
    """``1 - NCC`` between reference windows and warped neighbour windows.

    Args:
        ref: the reference's window statistics (:meth:`RefWindows.of`).
        warped: ``(D, H, W)`` grey neighbour (0..1) resampled onto the reference grid, one per
            hypothesis.
        valid: ``(D, H, W)`` bool, where ``warped`` sampled inside the neighbour.
        window: odd window side; windows are clipped at the image border.

    Returns:
        ``(D, H, W)`` cost in [0, 2]; :data:`_INVALID_COST` where the centre sample is invalid or
        either window is textureless (std below :data:`_MIN_STD`).
    """
    w = warped - 0.5
    sums = box_sum(torch.stack((w, w * w, w * ref.image)), window).div_(ref.count)
    mean_w, var_w, cov = sums[0], sums[1], sums[2]
    var_w.addcmul_(mean_w, mean_w, value=-1.0).clamp_min_(0)
    cov.addcmul_(ref.mean, mean_w, value=-1.0)
    std_w = var_w.sqrt_()
    denominator = (std_w * ref.std).clamp_min_(_MIN_STD**2)
    cost = cov.div_(denominator).clamp_(-1.0, 1.0).neg_().add_(1.0)
    invalid = (~valid) | (std_w <= _MIN_STD) | (ref.std <= _MIN_STD)
    return cost.masked_fill_(invalid, _INVALID_COST)


def warp_to_reference(
    src: torch.Tensor,
    rays_ref: torch.Tensor,
    K_src: torch.Tensor,
    src_from_ref: torch.Tensor,
    inv_depth: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the neighbour ``src`` at the projections of reference pixels at given depths.

    Args:
        src: ``(H_s, W_s)`` grey neighbour image.
        rays_ref: ``(3, H, W)`` reference rays ``K_ref^-1 [u, v, 1]`` (z = 1).
        K_src: ``(3, 3)`` neighbour intrinsics.
        src_from_ref: ``(4, 4)`` reference-camera -> neighbour-camera transform.
        inv_depth: ``(D, 1, 1)`` planes or ``(D, H, W)`` per-pixel inverse depths (> 0).

    Returns:
        ``warped`` ``(D, H, W)`` bilinear samples and ``valid`` ``(D, H, W)`` bool (in front of the
        neighbour, and all four bilinear taps inside it).
    """
    h_s, w_s = src.shape
    # Normalised grid coordinates straight from the projection (align_corners=True maps -1/+1 to
    # the centres of the border pixels, our pixel convention).
    to_grid = torch.tensor(
        [[2.0 / max(w_s - 1, 1), 0, -1], [0, 2.0 / max(h_s - 1, 1), -1], [0, 0, 1]],
        dtype=K_src.dtype, device=K_src.device,
    )
    P = to_grid @ K_src
    a = torch.einsum("ij,jk,khw->ihw", P, src_from_ref[:3, :3], rays_ref)  # (3, H, W)
    b = (P @ src_from_ref[:3, 3]).view(1, 3, 1, 1)
    # P (R d ray + t) / d = a + b / d: the same projection, no division by the depth.
    xyz = a.unsqueeze(0) + b * inv_depth.unsqueeze(1)  # (D, 3, H, W)
    z = xyz[:, 2]
    in_front = z > 1e-6
    # Behind the camera: a tiny positive z throws the sample far outside, where it reads 0.
    z = z.clamp_min(1e-6)
    grid = torch.stack((xyz[:, 0] / z, xyz[:, 1] / z), dim=-1)
    d = inv_depth.shape[0]
    # A constant channel tells where a sample used only pixels inside the neighbour.
    source = torch.stack((src, torch.ones_like(src))).expand(d, 2, h_s, w_s)
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    valid = in_front & (sampled[:, 1] > 0.999)
    return sampled[:, 0], valid


@dataclass
class _View:
    gray: torch.Tensor  # (H, W) float in 0..1
    rgb: np.ndarray  # (H, W, 3) uint8
    K: np.ndarray  # (3, 3) working-grid intrinsics
    cam2world: np.ndarray
    photo_from_map: np.ndarray


def _prepare_view(
    image: np.ndarray,
    K_photo: np.ndarray,
    cam2world: np.ndarray,
    resolution: int,
    device: torch.device,
) -> _View:
    h, w = image.shape[:2]
    size, photo_from_map = working_grid((w, h), resolution)
    pil = Image.fromarray(image)
    rgb = np.asarray(pil if size == (w, h) else pil.resize(size, Image.Resampling.LANCZOS))
    gray = torch.from_numpy(rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]) / 255.0)
    K = np.linalg.inv(photo_from_map) @ np.asarray(K_photo, float)
    return _View(gray.to(device), rgb, K, np.asarray(cam2world, float), photo_from_map)


def _angle_weight(theta_deg: np.ndarray) -> np.ndarray:
    """How useful a triangulation angle is: peaks at 10 deg, falls slowly for wider angles."""
    sigma = np.where(theta_deg < 10.0, 4.0, 15.0)
    return np.exp(-((theta_deg - 10.0) ** 2) / (2 * sigma**2))


def _select_neighbors(views: list[_View], ref: int, probes: np.ndarray, count: int) -> list[int]:
    """Indices of up to ``count`` neighbours, best first, scored by angle-weighted co-visibility."""
    c_ref = views[ref].cam2world[:3, 3]
    scores = []
    for j, view in enumerate(views):
        if j == ref:
            scores.append(0.0)
            continue
        w2c = np.linalg.inv(view.cam2world)
        pc = probes @ w2c[:3, :3].T + w2c[:3, 3]
        uvw = pc @ view.K.T
        h, w = view.gray.shape
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
        seen = (pc[:, 2] > 0) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        c_j = view.cam2world[:3, 3]
        r1 = probes - c_ref
        r2 = probes - c_j
        cos = (r1 * r2).sum(1) / (np.linalg.norm(r1, axis=1) * np.linalg.norm(r2, axis=1) + 1e-12)
        theta = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        scores.append(float((_angle_weight(theta) * seen).sum()))
    order = np.argsort(scores)[::-1]
    return [int(j) for j in order[:count] if scores[j] > 0]


def _depth_range(view: _View, points: np.ndarray) -> tuple[float, float] | None:
    """``(near, far)`` for the sweep from the points in front of the view (``None`` if < 10)."""
    w2c = np.linalg.inv(view.cam2world)
    z = (points @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]
    z = z[z > 0]
    if len(z) < 10:
        return None
    near, far = np.percentile(z, [2, 98])
    return 0.8 * float(near), 1.25 * float(far)


def _nearest_views(views: list[_View], ref: int, count: int) -> list[int]:
    """Up to ``count`` views nearest to ``ref`` whose optical axes are within 90 degrees of it."""
    c_ref, z_ref = views[ref].cam2world[:3, 3], views[ref].cam2world[:3, 2]
    candidates = [
        (float(np.linalg.norm(v.cam2world[:3, 3] - c_ref)), j)
        for j, v in enumerate(views)
        if j != ref and float(v.cam2world[:3, 2] @ z_ref) > 0
    ]
    return [j for _, j in sorted(candidates)[:count]]


def _coarse_points(views: list[_View], ref: int, options: MvsOptions) -> np.ndarray:
    """``(P, 3)`` world points from a wide, coarse sweep, for views without sparse points.

    Sweeps inverse depth from ~0 (far away) to the depth where the nearest neighbour's disparity
    is a whole image width, on the coarse grid, and keeps the confidently matched pixels.
    """
    neighbors = _nearest_views(views, ref, options.num_neighbors)
    if not neighbors:
        return np.zeros((0, 3))
    view = views[ref]
    baseline = min(
        float(np.linalg.norm(views[j].cam2world[:3, 3] - view.cam2world[:3, 3])) for j in neighbors
    )
    near = max(float(view.K[0, 0]) * baseline / max(view.gray.shape), 1e-9)
    coarse = MvsOptions(
        resolution=options.resolution,
        num_hypotheses=options.num_hypotheses,
        refine_hypotheses=0,
        num_neighbors=options.num_neighbors,
        best_k=options.best_k,
        window=options.window,
        smoothness=0.0,
    )
    depth, ncc = _sweep_depth(_Sweeper(views, ref, neighbors, coarse), near, 1e4 * near, coarse)
    keep = (ncc > 0.8) & torch.isfinite(depth)
    if int(keep.sum()) < 10:
        return np.zeros((0, 3))
    v_idx, u_idx = torch.nonzero(keep, as_tuple=True)
    pix = np.stack((u_idx.numpy(), v_idx.numpy(), np.ones(len(u_idx))), 0).astype(float)
    pts_cam = (np.linalg.inv(view.K) @ pix) * depth[keep].cpu().numpy()
    return (view.cam2world[:3, :3] @ pts_cam + view.cam2world[:3, 3:4]).T


class _Sweeper:
    """Aggregated NCC costs of one reference image against its neighbours."""

    def __init__(self, views: list[_View], ref: int, neighbors: list[int], options: MvsOptions):
        self.options = options
        self.gray = views[ref].gray
        self.ref = RefWindows.of(views[ref].gray, options.window)
        h, w = views[ref].gray.shape
        device = views[ref].gray.device
        self.device = device
        K_ref_inv = torch.as_tensor(np.linalg.inv(views[ref].K), dtype=torch.float32, device=device)
        v, u = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=device),
            torch.arange(w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        pix = torch.stack((u, v, torch.ones_like(u)))
        self.rays = torch.einsum("ij,jhw->ihw", K_ref_inv, pix)
        self.neighbors = []
        for j in neighbors:
            src_from_ref = np.linalg.inv(views[j].cam2world) @ views[ref].cam2world
            self.neighbors.append(
                (
                    views[j].gray,
                    torch.as_tensor(views[j].K, dtype=torch.float32, device=device),
                    torch.as_tensor(src_from_ref, dtype=torch.float32, device=device),
                )
            )
        self.k = min(options.best_k, len(neighbors))

    def cost(self, inv_depth: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """``(D, H, W)`` mean of the ``best_k`` lowest neighbour costs for each hypothesis."""
        out = []
        for start in range(0, inv_depth.shape[0], chunk):
            part = inv_depth[start : start + chunk]
            per_neighbor = []
            for src, K_src, src_from_ref in self.neighbors:
                warped, valid = warp_to_reference(src, self.rays, K_src, src_from_ref, part)
                per_neighbor.append(ncc_cost(self.ref, warped, valid, self.options.window))
            stacked = torch.stack(per_neighbor)
            best = torch.topk(stacked, self.k, dim=0, largest=False).values
            out.append(best.mean(0))
        return torch.cat(out)


def _parabola_offset(cost: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Sub-hypothesis offset in [-0.5, 0.5] of the cost minimum at ``index`` (``(H, W)``)."""
    d = cost.shape[0]
    i0 = index.clamp(1, d - 2)
    c_m = cost.gather(0, (i0 - 1).unsqueeze(0))[0]
    c_0 = cost.gather(0, i0.unsqueeze(0))[0]
    c_p = cost.gather(0, (i0 + 1).unsqueeze(0))[0]
    curvature = c_m - 2 * c_0 + c_p
    offset = torch.where(curvature > 1e-6, 0.5 * (c_m - c_p) / curvature.clamp_min(1e-6), 0.0)
    interior = (index > 0) & (index < d - 1)
    return torch.where(interior, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


def semi_global_aggregate(
    cost: torch.Tensor, gray: torch.Tensor, p1: float, p2: float
) -> torch.Tensor:
    """Semi-global cost aggregation (Hirschmueller 2008) along 4 image directions.

    ``L_r(p, d) = C(p, d) + min(L_r(p-r, d), L_r(p-r, d+-1) + p1, min_k L_r(p-r, k) + P2(p))
    - min_k L_r(p-r, k)``, summed over left/right/up/down. It lets textureless pixels (flat
    cost) take the depth of their textured surroundings while depth steps cost at most ``P2``,
    which is lowered across image edges (``P2 = p2 / (1 + 20 |grey step|)``).

    Args:
        cost: ``(D, H, W)`` matching cost per hypothesis (neighbouring hypotheses adjacent).
        gray: ``(H, W)`` reference grey image in 0..1 (edges guide ``P2``).
        p1, p2: penalties for a one-hypothesis step and for a larger jump.

    Returns:
        ``(D, H, W)`` aggregated cost.
    """
    total = torch.zeros_like(cost)
    for dim, reverse in ((2, False), (2, True), (1, False), (1, True)):
        c = cost.flip(dim) if reverse else cost
        g = gray.flip(dim - 1) if reverse else gray
        steps = c.shape[dim]
        edge = (g.narrow(dim - 1, 1, steps - 1) - g.narrow(dim - 1, 0, steps - 1)).abs()
        penalty = p2 / (1.0 + 20.0 * edge)
        out = torch.empty_like(c)
        prev = c.select(dim, 0)
        out.select(dim, 0).copy_(prev)
        for x in range(1, steps):
            prev_min = prev.min(0).values
            up = F.pad(prev[1:], (0, 0, 0, 1), value=float("inf"))
            down = F.pad(prev[:-1], (0, 0, 1, 0), value=float("inf"))
            best = torch.minimum(torch.minimum(up, down) + p1, prev)
            best = torch.minimum(best, (prev_min + penalty.select(dim - 1, x - 1)).unsqueeze(0))
            prev = c.select(dim, x) + best - prev_min.unsqueeze(0)
            out.select(dim, x).copy_(prev)
        total += out.flip(dim) if reverse else out
    return total


def _sweep_depth(
    sweeper: _Sweeper, near: float, far: float, options: MvsOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth ``(H, W)`` and its aggregated NCC ``(H, W)`` (-1 where untextured) for one image.

    Winner-take-all over the (optionally semi-globally aggregated) costs, a parabola through the
    minimum, and a finer per-pixel sweep around it where the pixel is textured.
    """
    device = sweeper.device
    inv = torch.linspace(1.0 / far, 1.0 / near, options.num_hypotheses, device=device)
    step = float(inv[1] - inv[0])
    raw = sweeper.cost(inv.view(-1, 1, 1))
    cost = raw
    if options.smoothness > 0:
        p2 = options.smoothness
        cost = semi_global_aggregate(raw, sweeper.gray, 0.1 * p2, p2)
    index = cost.argmin(0)
    best_cost = raw.gather(0, index.unsqueeze(0))[0]
    inv_best = inv[index] + _parabola_offset(cost, index) * step
    if options.refine_hypotheses > 1:
        # A finer per-pixel sweep over +-1 coarse step; kept where it matches better.
        offsets = torch.linspace(-1.0, 1.0, options.refine_hypotheses, device=device) * step
        fine_inv = (inv_best.unsqueeze(0) + offsets.view(-1, 1, 1)).clamp_min(1e-3 / far)
        fine_cost = sweeper.cost(fine_inv)
        fine_best, fine_index = fine_cost.min(0)
        fine_step = float(offsets[1] - offsets[0])
        fine = fine_inv.gather(0, fine_index.unsqueeze(0))[0]
        fine = fine + _parabola_offset(fine_cost, fine_index) * fine_step
        better = fine_best < best_cost
        inv_best = torch.where(better, fine, inv_best)
        best_cost = torch.minimum(fine_best, best_cost)
    textured = best_cost < _INVALID_COST - 1e-6
    # A minimum at either end of the range is no minimum: the surface lies outside it.
    inside = (index > 0) & (index < options.num_hypotheses - 1)
    known = inside & (textured if options.smoothness <= 0 else torch.ones_like(textured))
    inv_best = torch.where(known, inv_best, torch.full_like(inv_best, float("nan")))
    depth = 1.0 / inv_best
    return depth, torch.where(textured, 1.0 - best_cost, torch.full_like(best_cost, -1.0))


def _consistent_count(
    views: list[_View],
    depths: list[torch.Tensor],
    ref: int,
    neighbors: list[int],
    options: MvsOptions,
) -> torch.Tensor:
    """``(H, W)`` number of neighbours whose depth maps agree with the reference depth."""
    depth_r = depths[ref]
    h, w = depth_r.shape
    device = depth_r.device
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    K_r = torch.as_tensor(views[ref].K, dtype=torch.float32, device=device)
    rays = torch.linalg.solve(K_r, torch.stack((u, v, torch.ones_like(u))).reshape(3, -1))
    pts_r = rays * depth_r.reshape(1, -1)
    count = torch.zeros(h * w, dtype=torch.int32, device=device)
    for j in neighbors:
        j_from_ref = np.linalg.inv(views[j].cam2world) @ views[ref].cam2world
        T = torch.as_tensor(j_from_ref, dtype=torch.float32, device=device)
        K_j = torch.as_tensor(views[j].K, dtype=torch.float32, device=device)
        pts_j = T[:3, :3] @ pts_r + T[:3, 3:4]
        uvw = K_j @ pts_j
        uj, vj = uvw[0] / uvw[2], uvw[1] / uvw[2]
        h_j, w_j = depths[j].shape
        grid = torch.stack((2 * uj / (w_j - 1) - 1, 2 * vj / (h_j - 1) - 1), -1).view(1, 1, -1, 2)
        # Nearest sampling: never mixes depths across an occlusion edge.
        d_j = F.grid_sample(
            depths[j].view(1, 1, h_j, w_j), grid.nan_to_num(-2.0), mode="nearest",
            padding_mode="zeros", align_corners=True,
        ).view(-1)
        back_j = torch.linalg.solve(K_j, torch.stack((uj, vj, torch.ones_like(uj)))) * d_j
        T_inv = torch.linalg.inv(T)
        back_r = T_inv[:3, :3] @ back_j + T_inv[:3, 3:4]
        uvw_r = K_r @ back_r
        reproj = torch.hypot(
            uvw_r[0] / uvw_r[2] - u.reshape(-1), uvw_r[1] / uvw_r[2] - v.reshape(-1)
        )
        rel = (back_r[2] - pts_r[2]).abs() / pts_r[2]
        # Views agree trivially on points too far away for parallax (at infinity only rotation
        # matters), so an agreeing view must also see the point from a different direction.
        centre_j = T_inv[:3, 3:4]
        cos_angle = F.cosine_similarity(pts_r, pts_r - centre_j, dim=0)
        parallax = cos_angle < math.cos(math.radians(_MIN_PARALLAX_DEG))
        ok = (reproj < options.max_reproj_error) & (rel < options.max_rel_depth_error) & (d_j > 0)
        ok &= parallax
        count += ok.to(torch.int32)
    return count.view(h, w)


def dense_from_cameras(
    images: list[np.ndarray],
    K_photo: np.ndarray,
    cam2world: np.ndarray,
    options: MvsOptions = MvsOptions(),
    progress: Progress | None = None,
    points_world: np.ndarray | None = None,
    visible: list[np.ndarray] | None = None,
    depth_range: tuple[float, float] | None = None,
    device: str = "cpu",
) -> list[DenseView]:
    """Dense depth, confidence and world points for every image with known cameras.

    Args:
        images: ``N`` photos ``(H_i, W_i, 3)`` uint8 RGB (full resolution, EXIF-oriented).
        K_photo: ``(N, 3, 3)`` intrinsics in photo pixels (top-left pixel centre at (0, 0)).
        cam2world: ``(N, 4, 4)`` camera-to-world, OpenCV axes.
        options: dense settings.
        progress: reports stage ``dense`` per image and cancels between images.
        points_world: optional ``(M, 3)`` sparse points (neighbour choice and depth range).
        visible: optional per image, indices into ``points_world`` that it observes.
        depth_range: optional ``(near, far)`` for every image; overrides the sparse points.
        device: torch device (``cpu`` or ``cuda``).

    Returns:
        One :class:`DenseView` per image, in input order.

    Raises:
        InputError: fewer than two images, or array shapes that do not match.
    """
    progress = progress if progress is not None else Progress()
    n = len(images)
    K_photo = np.asarray(K_photo, float)
    cam2world = np.asarray(cam2world, float)
    if n < 2 or K_photo.shape != (n, 3, 3) or cam2world.shape != (n, 4, 4):
        raise InputError(
            f"Dense stereo needs >= 2 images with one K (3x3) and cam2world (4x4) each; got "
            f"{n} images, K {K_photo.shape}, cam2world {cam2world.shape}."
        )
    threads_before = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _dense(
            images, K_photo, cam2world, options, progress, points_world, visible, depth_range,
            device,
        )
    finally:
        torch.set_num_threads(threads_before)


def _dense(
    images: list[np.ndarray],
    K_photo: np.ndarray,
    cam2world: np.ndarray,
    options: MvsOptions,
    progress: Progress,
    points_world: np.ndarray | None,
    visible: list[np.ndarray] | None,
    depth_range: tuple[float, float] | None,
    device: str,
) -> list[DenseView]:
    n = len(images)
    torch_device = torch.device(device)
    views = [
        _prepare_view(images[i], K_photo[i], cam2world[i], options.resolution, torch_device)
        for i in range(n)
    ]
    coarse_views: list[_View] = []  # a quarter-resolution copy, made when first needed
    depths, nccs, neighbor_lists = [], [], []
    with torch.no_grad():
        for i in range(n):
            progress("dense", i / (n + 1), f"depth of image {i + 1}/{n}")
            own_points = None
            if points_world is not None:
                own_points = points_world[visible[i]] if visible is not None else points_world
            if own_points is None or len(own_points) < 20:
                if not coarse_views:
                    coarse = options.resolution // 4
                    coarse_views = [
                        _prepare_view(images[k], K_photo[k], cam2world[k], coarse, torch_device)
                        for k in range(n)
                    ]
                own_points = _coarse_points(coarse_views, i, options)
            near_far = depth_range or _depth_range(views[i], own_points)
            ranked = []
            if len(own_points):
                count = max(options.num_neighbors, options.check_neighbors)
                ranked = _select_neighbors(views, i, own_points, count)
            neighbors = ranked[: options.num_neighbors]
            neighbor_lists.append(ranked[: options.check_neighbors])
            if not neighbors or near_far is None:
                h, w = views[i].gray.shape
                depths.append(torch.full((h, w), float("nan"), device=torch_device))
                nccs.append(torch.full((h, w), -1.0, device=torch_device))
                continue
            near, far = near_far
            sweeper = _Sweeper(views, i, neighbors, options)
            depth, ncc = _sweep_depth(sweeper, near, far, options)
            depths.append(depth)
            nccs.append(ncc)
            log.debug("image %d: range %.3g..%.3g, neighbours %s", i, near, far, neighbors)
        progress("dense", n / (n + 1), "geometric consistency across views")
        keeps, agreements = [], []
        for i in range(n):
            needed = max(min(options.min_consistent, len(neighbor_lists[i])), 1)
            count = _consistent_count(views, depths, i, neighbor_lists[i], options)
            matched = (nccs[i] >= options.min_ncc) | ((nccs[i] < -0.5) & (options.smoothness > 0))
            keeps.append((count >= needed) & matched & torch.isfinite(depths[i]))
            agreements.append(count.float() / max(len(neighbor_lists[i]), 1))
        if options.plane_fill:
            nan = float("nan")
            kept = [torch.where(k, d, torch.full_like(d, nan)) for k, d in zip(keeps, depths)]
            # Each image's planes also rest on its neighbours' kept depths: they see other edges
            # of the same blank walls.
            filled = [
                plane_fill(
                    views[i].gray, kept[i], options.window,
                    _projected_depths(views, kept, i, neighbor_lists[i]),
                )
                for i in range(n)
            ]
            # Plane fits average depths with 1-2% noise, so neighbours' fills of the same wall
            # differ by more than matched depths do; they are checked at their own tolerance.
            fill_check = dataclasses.replace(
                options,
                max_rel_depth_error=options.fill_max_rel_depth_error,
                max_reproj_error=options.fill_max_reproj_error,
            )
            for i in range(n):
                new = torch.isfinite(filled[i]) & ~keeps[i]
                needed = max(min(options.min_consistent, len(neighbor_lists[i])), 1)
                count = _consistent_count(views, filled, i, neighbor_lists[i], fill_check)
                accept = new & (count >= needed)
                log.debug("image %d: %d px plane-filled, %d consistent", i, new.sum(), accept.sum())
                depths[i] = torch.where(accept, filled[i], depths[i])
                nccs[i] = torch.where(accept, torch.zeros_like(nccs[i]), nccs[i])
                agreements[i] = torch.where(
                    accept, count.float() / max(len(neighbor_lists[i]), 1), agreements[i]
                )
                keeps[i] = keeps[i] | accept
        out = [
            _dense_view(views[i], depths[i], nccs[i], agreements[i], keeps[i]) for i in range(n)
        ]
    progress("dense", 1.0, "")
    return out


def _projected_depths(
    views: list[_View], depths: list[torch.Tensor], ref: int, neighbors: list[int]
) -> torch.Tensor:
    """``(H, W)`` z-depth in view ``ref`` of the neighbours' finite depths, NaN where none lands.

    Each neighbour pixel with a depth is unprojected, moved into the reference camera and rounded
    to its nearest reference pixel; where several land on one pixel the nearest wins (a z-buffer,
    so surfaces hidden in the reference view mostly lose to the visible one).
    """
    h, w = views[ref].gray.shape
    device = depths[ref].device
    ref_from_world = torch.as_tensor(
        np.linalg.inv(views[ref].cam2world), dtype=torch.float32, device=device
    )
    K_r = torch.as_tensor(views[ref].K, dtype=torch.float32, device=device)
    nearest = torch.full((h * w,), float("inf"), device=device)
    for j in neighbors:
        v_j, u_j = torch.nonzero(torch.isfinite(depths[j]), as_tuple=True)
        pix = torch.stack((u_j, v_j, torch.ones_like(u_j))).to(torch.float32)
        K_j_inv = torch.as_tensor(np.linalg.inv(views[j].K), dtype=torch.float32, device=device)
        ref_from_j = ref_from_world @ torch.as_tensor(
            views[j].cam2world, dtype=torch.float32, device=device
        )
        pts = ref_from_j[:3, :3] @ (K_j_inv @ pix * depths[j][v_j, u_j]) + ref_from_j[:3, 3:4]
        uvw = K_r @ pts
        z = pts[2].clamp_min(1e-6)
        u = torch.round(uvw[0] / z)
        v = torch.round(uvw[1] / z)
        inside = (pts[2] > 1e-6) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        index = (v[inside] * w + u[inside]).long()
        nearest.scatter_reduce_(0, index, pts[2][inside], reduce="amin")
    return torch.where(torch.isinf(nearest), float("nan"), nearest).view(h, w)


def _dense_view(
    view: _View, depth: torch.Tensor, ncc: torch.Tensor, agreement: torch.Tensor, keep: torch.Tensor
) -> DenseView:
    """Package one image's maps; confidence = mean of NCC and the share of agreeing neighbours."""
    depth_np = torch.where(keep, depth, torch.full_like(depth, float("nan"))).cpu().numpy()
    conf = torch.where(keep, 0.5 * (ncc.clamp(0, 1) + agreement.clamp(0, 1)), torch.zeros_like(ncc))
    h, w = depth_np.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack((u, v, np.ones_like(u)), -1) @ np.linalg.inv(view.K).T
    pts_cam = rays * depth_np[..., None]
    pts_world = pts_cam @ view.cam2world[:3, :3].T + view.cam2world[:3, 3]
    return DenseView(
        K=view.K,
        photo_from_map=view.photo_from_map,
        depth=depth_np.astype(np.float32),
        conf=conf.cpu().numpy().astype(np.float32),
        pts3d_world=pts_world.astype(np.float32),
        colors=view.rgb.copy(),
    )

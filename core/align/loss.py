"""The paper's confidence-weighted, unsquared 3D alignment loss (depths solved in closed form).

The loss is ``sum_obs w * ||X(pixel) - (s_e R_e P + t_e)||`` over all edge sides, divided by
``sum w``, with ``X(pixel) = c_n + depth * R_n K_n^-1 (u, v, 1)`` and ``w = log(conf)``. It is
minimised by iteratively reweighted least squares: for fixed robust weights
``omega = w / ||residual||`` the squared problem is smooth, and its optimal depths are a weighted
mean of the targets' projections on the pixel's ray, exactly. Holding those depths fixed while
differentiating is then exact (envelope theorem), so the optimiser sees a small problem in the
cameras and similarities only ("variable projection"). The norm is smoothed by ``eps`` so exact
data stay a well-defined optimum.
"""

from __future__ import annotations

import torch

from .depth import solve_depth
from .model import SceneModel


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along dim 0. Its gradient is summed by ``index_add_``, which gives the same
    bits on any number of threads; the gradient of ``x[index]`` (``index_put_`` with
    accumulation) is summed in a thread-dependent order when several threads share the work."""
    return torch.index_select(x, 0, index)


class AlignmentLoss:
    """The loss of one set of observations.

    Args:
        tensors: ``uv (M, 2)``, ``pixel_image (M,)``, ``pts (K, 3)``, ``weight (K,)``,
            ``obs_pixel (K,)``, ``obs_edge (K,)`` as torch tensors (see ``Observations``).
        eps: smoothing of the distance (world units).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], eps: float) -> None:
        self.t = tensors
        self.eps = eps
        self.weight = tensors["weight"]
        self.total_weight = float(self.weight.sum())
        self.robust_weight = self.weight.clone()
        # Observations come edge by edge: lay them out as (E, L, 3), padded, so each edge's
        # similarity is one batched matrix product instead of a 3x3 gather per observation.
        edge = tensors["obs_edge"]
        counts = torch.bincount(edge, minlength=int(edge.max()) + 1)
        starts = torch.cumsum(counts, 0) - counts
        self.block = int(counts.max())
        self.flat = edge * self.block + torch.arange(len(edge)) - starts[edge]
        padded = torch.zeros(len(counts) * self.block, 3, dtype=tensors["pts"].dtype)
        padded[self.flat] = tensors["pts"]
        self.padded_pts = padded.reshape(len(counts), self.block, 3)

    def rays(self, model: SceneModel) -> tuple[torch.Tensor, torch.Tensor]:
        """``origin (M, 3)`` and world ray directions ``(M, 3)`` (unit camera z) of all pixels."""
        R, c, focal, pp = model.cameras()
        img = self.t["pixel_image"]
        xy = (self.t["uv"] - _take(pp, img)) / _take(focal, img)
        cam = torch.cat([xy, torch.ones_like(xy[:, :1])], dim=1)
        return _take(c, img), torch.einsum("mij,mj->mi", _take(R, img), cam)

    def targets(self, model: SceneModel) -> torch.Tensor:
        """``(K, 3)`` every observation mapped to the world by its edge's similarity."""
        R, t, s = model.edges()
        scaled = (s[:, None, None] * R).transpose(1, 2)
        moved = torch.baddbmm(t[:, None, :], self.padded_pts, scaled)
        return moved.reshape(-1, 3)[self.flat]

    def residuals(self, model: SceneModel) -> torch.Tensor:
        """``(K, 3)`` world point of each observation's pixel minus its target."""
        origin, rays = self.rays(model)
        targets = self.targets(model)
        pix = self.t["obs_pixel"]
        with torch.no_grad():
            depth = solve_depth(origin, rays, targets, self.robust_weight, pix, self.eps, 0)
            depth = torch.nan_to_num(depth)
        return _take(origin, pix) + depth[pix, None] * _take(rays, pix) - targets

    def reweight(self, model: SceneModel) -> float:
        """Update the robust weights from the current residuals; returns the paper's loss."""
        with torch.no_grad():
            r = self.residuals(model)
            dist = torch.sqrt((r * r).sum(-1) + self.eps**2)
            self.robust_weight = self.weight / dist
            return float((self.weight * dist).sum()) / self.total_weight

    def __call__(self, model: SceneModel) -> torch.Tensor:
        """The reweighted squared loss (the paper's loss's gradient at the current weights)."""
        r = self.residuals(model)
        return 0.5 * (self.robust_weight * (r * r).sum(-1)).sum() / self.total_weight

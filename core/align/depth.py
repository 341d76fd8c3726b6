"""Closed-form depth along each pixel's ray given the targets that edges put it at.

For a pixel with ray ``c + d * rho`` (``rho`` the world direction of the pixel with unit camera
z, so ``d`` is the z-depth) and targets ``Y_k`` with weights ``w_k`` from the edges that see it, the
depth minimising ``sum_k w_k * sqrt(||c + d rho - Y_k||^2 + eps^2)`` is found by a few
iteratively reweighted least-squares steps, each a weighted mean of the targets' projections on
the ray. All pixels of all images are solved at once (``index_add`` over observations).
"""

from __future__ import annotations

import torch


def solve_depth(
    origin: torch.Tensor,
    rays: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    obs_pixel: torch.Tensor,
    eps: float,
    iterations: int = 4,
) -> torch.Tensor:
    """Robust depth of every pixel.

    Args:
        origin: ``(M, 3)`` ray origins (camera centres); ``rays``: ``(M, 3)`` directions.
        targets: ``(K, 3)`` target points; ``weight``: ``(K,)``; ``obs_pixel``: ``(K,)`` pixel of
            each target.
        eps: smoothing of the unsquared distance (world units).

    Returns:
        ``(M,)`` depths; NaN for pixels without any weighted target.
    """
    m = len(origin)
    ray = rays[obs_pixel]
    ray_sq = (ray * ray).sum(-1)
    rel = targets - origin[obs_pixel]
    along = (ray * rel).sum(-1) / ray_sq  # depth of the target's projection on the ray

    def weighted_mean(w: torch.Tensor) -> torch.Tensor:
        num = torch.zeros(m, dtype=w.dtype).index_add_(0, obs_pixel, w * along)
        den = torch.zeros(m, dtype=w.dtype).index_add_(0, obs_pixel, w)
        return num / den

    depth = weighted_mean(weight)
    if iterations > 0:
        across_sq = ((rel * rel).sum(-1) - along * along * ray_sq).clamp(min=0)
    for _ in range(iterations):
        dist = torch.sqrt(ray_sq * (depth[obs_pixel] - along) ** 2 + across_sq + eps * eps)
        depth = weighted_mean(weight / dist)
    return depth

"""Rotation vectors to matrices (torch, differentiable, safe at zero)."""

from __future__ import annotations

import torch


def rotation_from_vector(omega: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: ``(..., 3)`` rotation vectors (radians) to ``(..., 3, 3)`` matrices.

    Uses the Taylor series near zero so values and gradients stay finite at the identity.
    """
    theta2 = (omega * omega).sum(-1, keepdim=True)[..., None]
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta * theta))
    x, y, z = omega.unbind(-1)
    o = torch.zeros_like(x)
    skew = torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*omega.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a * skew + b * (skew @ skew)

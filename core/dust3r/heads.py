"""Pointmap heads: linear (pixel shuffle) and DPT, plus the ``exp`` output post-processing.

Both heads take the token maps the model hooks for them (see :attr:`.model.Dust3rNet.head_hooks`)
and return full-resolution ``(B, 4, H, W)`` raw maps; :func:`postprocess` turns these into points
and confidences. Attribute names equal the official state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def postprocess(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw head output to points and confidence (depth mode ``exp``, conf mode ``exp``, 1).

    Args:
        raw: ``(B, 4, H, W)`` float32; channels 0..2 a 3D vector, channel 3 a log-confidence.

    Returns:
        ``pts3d`` ``(B, H, W, 3)``: the vector's direction with radial distance ``e^|v| - 1``;
        ``conf`` ``(B, H, W)`` ``= 1 + e^c`` (always > 1).
    """
    fmap = raw.permute(0, 2, 3, 1)
    xyz = fmap[..., :3]
    dist = xyz.norm(dim=-1, keepdim=True)
    pts3d = xyz / dist.clip(min=1e-8) * torch.expm1(dist)
    conf = 1.0 + fmap[..., 3].exp()
    return pts3d, conf


def _to_map(tokens: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Row-major tokens ``(B, h*w, C)`` -> ``(B, C, h, w)``."""
    return tokens.transpose(1, 2).unflatten(2, grid_hw)


class LinearHead(nn.Module):
    """One linear layer per token to ``4 x p x p`` values, pixel-shuffled to full resolution."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = nn.Linear(config.dec_embed_dim, 4 * config.patch_size**2)

    def forward(self, hooked: list[torch.Tensor], grid_hw: tuple[int, int]) -> torch.Tensor:
        """``hooked`` = ``[last decoder output (B, N, C)]`` -> ``(B, 4, H, W)``."""
        return F.pixel_shuffle(_to_map(self.proj(hooked[-1]), grid_hw), self.patch_size)


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` (the skip uses the pre-activation input)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """DPT feature fusion: add the refined skip input, refine, upsample x2, 1x1 conv.

    ``resConfUnit1`` exists in every fusion block but is unused in the deepest one, which has no
    skip input (its weights are in the checkpoints, so the module stays).
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    """Projections of the four stages to ``feature_dim`` and the four fusion blocks.

    The reference registers the projections twice, as ``layer{1..4}_rn`` and as the list
    ``layer_rn.{0..3}`` (the same modules), so checkpoints carry both names for the same tensors.
    We register them once, under ``layer{1..4}_rn``; :func:`.weights.canonical_state_dict` drops
    (or renames) the ``layer_rn.*`` alias when loading.
    """

    def __init__(self, layer_dims: tuple[int, ...], features: int) -> None:
        super().__init__()
        for k, dim in enumerate(layer_dims, start=1):
            setattr(self, f"layer{k}_rn", nn.Conv2d(dim, features, 3, padding=1, bias=False))
        for k in range(1, 5):
            setattr(self, f"refinenet{k}", FusionBlock(features))

    def projections(self) -> list[nn.Conv2d]:
        return [self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn]


class DPTAdapter(nn.Module):
    """DPT decoder over four hooked token maps (encoder output, three decoder depths)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dims_in = (config.enc_embed_dim,) + (config.dec_embed_dim,) * 3
        d0, d1, d2, d3 = config.dpt_layer_dims
        features = config.dpt_feature_dim
        # Reassemble: stage 0 x4 up, stage 1 x2 up, stage 2 as is, stage 3 /2 (stride-2 conv).
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dims_in[0], d0, 1), nn.ConvTranspose2d(d0, d0, 4, stride=4)),
            nn.Sequential(nn.Conv2d(dims_in[1], d1, 1), nn.ConvTranspose2d(d1, d1, 2, stride=2)),
            nn.Sequential(nn.Conv2d(dims_in[2], d2, 1)),
            nn.Sequential(nn.Conv2d(dims_in[3], d3, 1), nn.Conv2d(d3, d3, 3, stride=2, padding=1)),
        ])
        self.scratch = _Scratch(config.dpt_layer_dims, features)
        self.head = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(features // 2, config.dpt_last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(config.dpt_last_dim, 4, 1),
        )

    def forward(self, hooked: list[torch.Tensor], grid_hw: tuple[int, int]) -> torch.Tensor:
        """Four token maps ``(B, h*w, C_k)`` -> ``(B, 4, 16h, 16w)``."""
        layers = [
            proj(post(_to_map(tokens, grid_hw)))
            for tokens, post, proj in zip(hooked, self.act_postprocess, self.scratch.projections())
        ]
        s = self.scratch
        # The stride-2 stage rounds odd sizes up (21 -> 11 -> 22): crop back to stage 2's size.
        path = s.refinenet4(layers[3])[:, :, : layers[2].shape[2], : layers[2].shape[3]]
        path = s.refinenet3(path, layers[2])
        path = s.refinenet2(path, layers[1])
        path = s.refinenet1(path, layers[0])
        return self.head(path)


class DPTHead(nn.Module):
    """Wrapper whose only child is ``dpt`` (the checkpoint keys read ``downstream_head1.dpt.*``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dpt = DPTAdapter(config)

    def forward(self, hooked: list[torch.Tensor], grid_hw: tuple[int, int]) -> torch.Tensor:
        return self.dpt(hooked, grid_hw)

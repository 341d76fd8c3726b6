"""Transformer blocks of the encoder and the two decoders (pre-norm ViT blocks with RoPE-2D).

Attribute names equal the official state-dict keys (``attn.qkv``, ``cross_attn.projq``,
``norm_y``...), so a checkpoint loads with a plain strict ``load_state_dict``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope

RopeTables = tuple[torch.Tensor, torch.Tensor]
"""``(cos, sin)`` ``(N, head_dim)`` from :func:`.rope.rope_tables`."""


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, heads, N, C / heads)``."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, heads, N, D)`` -> ``(B, N, heads * D)``."""
    return x.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``qkv`` outputs ``[q | k | v]``, each head a contiguous block."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RopeTables) -> torch.Tensor:
        """``x`` ``(B, N, C)`` -> ``(B, N, C)``; RoPE on q and k."""
        q, k, v = (_split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Multi-head attention of one view's tokens (queries) to the other view's (keys, values)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, rope_x: RopeTables, rope_memory: RopeTables
    ) -> torch.Tensor:
        """``x`` ``(B, Nx, C)`` attends to ``memory`` ``(B, Nm, C)``; q rotated with x's grid,
        k with memory's grid. Returns ``(B, Nx, C)``."""
        q = apply_rope(_split_heads(self.projq(x), self.num_heads), *rope_x)
        k = apply_rope(_split_heads(self.projk(memory), self.num_heads), *rope_memory)
        v = _split_heads(self.projv(memory), self.num_heads)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderBlock(nn.Module):
    """``x += Attn(LN1(x)); x += MLP(LN2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: RopeTables) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``."""
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the other view (normed by ``norm_y``), MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.norm_y = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, other: torch.Tensor, rope_x: RopeTables, rope_other: RopeTables
    ) -> torch.Tensor:
        """Update this view's tokens ``x`` ``(B, Nx, C)`` given the other view's ``(B, No, C)``."""
        x = x + self.attn(self.norm1(x), rope_x)
        x = x + self.cross_attn(self.norm2(x), self.norm_y(other), rope_x, rope_other)
        return x + self.mlp(self.norm3(x))

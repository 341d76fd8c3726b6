"""RoPE-2D: rotary position embedding over token rows and columns (CroCo's ``RoPE100``).

Each attention head of width ``D`` is split into four quarters ``[u_y | v_y | u_x | v_x]`` of
``D/4``: the first half is rotated by the token's row, the second half by its column. Within a half,
element ``k`` pairs with element ``k + D/4`` ("rotate half"), at frequency ``base^(-k / (D/4))``.
Only queries and keys are rotated, never values.
"""

from __future__ import annotations

import torch


def rope_tables(
    grid_hw: tuple[int, int], head_dim: int, base: float, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables for a row-major token grid.

    Args:
        grid_hw: ``(h, w)`` tokens; token ``t = r * w + c`` sits at row ``r``, column ``c``.
        head_dim: width of one attention head (a multiple of 4).
        base: frequency base (100 for the released models).

    Returns:
        ``(cos, sin)``, each ``(h * w, head_dim)`` float32.
    """
    half = head_dim // 2
    # Same expression as the reference (arange(0, half, 2) / half) so the float32 bits agree.
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, device=device).float() / half))
    rows = torch.arange(grid_hw[0], device=device, dtype=torch.float32)
    cols = torch.arange(grid_hw[1], device=device, dtype=torch.float32)
    row_of_token = rows.repeat_interleave(grid_hw[1])
    col_of_token = cols.repeat(grid_hw[0])
    angles = []
    for pos in (row_of_token, col_of_token):
        freqs = pos[:, None] * inv_freq[None, :]
        angles.append(torch.cat((freqs, freqs), dim=-1))
    angle = torch.cat(angles, dim=-1)
    return angle.cos(), angle.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys.

    Args:
        x: ``(B, heads, N, D)``.
        cos, sin: ``(N, D)`` tables from :func:`rope_tables` (cast to ``x``'s dtype here).

    Returns:
        ``(B, heads, N, D)`` in ``x``'s dtype.
    """
    a, b, c, d = x.unflatten(-1, (4, -1)).unbind(-2)
    rotated = torch.cat((-b, a, -d, c), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)

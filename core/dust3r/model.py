"""The DUSt3R network: a Siamese ViT encoder, two decoders in lock-step, two pointmap heads.

The forward pass is split in three steps so the inference engine can encode every image once
and reuse the encoding in all of its pairs:

* :meth:`Dust3rNet.encode` ``(B, 3, H, W)`` image -> ``(B, N, enc_dim)`` tokens;
* :meth:`Dust3rNet.decode` two views' tokens -> the token maps each head reads;
* :meth:`Dust3rNet.predict` token maps -> points and confidences (float32, autocast off).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import DecoderBlock, EncoderBlock, RopeTables
from .config import ModelConfig
from .heads import DPTHead, LinearHead, postprocess
from .rope import rope_tables


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patches to tokens, row-major; no norm, no position table."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = nn.Conv2d(3, config.enc_embed_dim, config.patch_size, stride=config.patch_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` with H, W multiples of the patch size -> ``(B, H*W/p^2, C)``."""
        h, w = img.shape[-2:]
        if img.ndim != 4 or img.shape[1] != 3 or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image batch must be (B, 3, H, W) with H, W multiples of {self.patch_size}; "
                f"got {tuple(img.shape)}"
            )
        return self.proj(img).flatten(2).transpose(1, 2)


class Dust3rNet(nn.Module):
    """DUSt3R ``AsymmetricCroCo3DStereo`` at inference, with the official parameter names.

    Args:
        config: architecture; defaults to the released 512 DPT model.
    """

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        self.name = ""
        """Checkpoint name (file stem), set by :func:`.weights.load_model`; recorded in outputs."""
        self.load_warnings: list[str] = []
        """What :func:`.weights.load_model` had to assume about the checkpoint, for the user."""
        self.patch_embed = PatchEmbed(c)
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(c.enc_embed_dim, c.enc_num_heads, c.mlp_ratio, c.norm_eps)
            for _ in range(c.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(c.enc_embed_dim, eps=c.norm_eps)
        self.decoder_embed = nn.Linear(c.enc_embed_dim, c.dec_embed_dim)
        self.dec_blocks, self.dec_blocks2 = (
            nn.ModuleList(
                DecoderBlock(c.dec_embed_dim, c.dec_num_heads, c.mlp_ratio, c.norm_eps)
                for _ in range(c.dec_depth)
            )
            for _ in range(2)
        )
        self.dec_norm = nn.LayerNorm(c.dec_embed_dim, eps=c.norm_eps)
        head_cls = DPTHead if c.head_type == "dpt" else LinearHead
        self.downstream_head1 = head_cls(c)
        self.downstream_head2 = head_cls(c)
        # CroCo's pre-training mask token: unused at inference, kept so that the released
        # checkpoints load with a strict key check and no special case.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_embed_dim))

    @property
    def head_hooks(self) -> tuple[int, ...]:
        """Indices into ``[encoder output, decoder block 1..dec_depth]`` that the heads read."""
        if self.config.head_type == "dpt":
            return self.config.dpt_hooks
        return (self.config.dec_depth,)

    def grid(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Token grid ``(h, w)`` of an ``(H, W)`` image."""
        p = self.config.patch_size
        return image_hw[0] // p, image_hw[1] // p

    def _rope(
        self, grid_hw: tuple[int, int], num_heads: int, dim: int, device: torch.device
    ) -> RopeTables:
        return rope_tables(grid_hw, dim // num_heads, self.config.rope_base, device)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """Encode a batch of same-size images.

        Args:
            img: ``(B, 3, H, W)`` normalised to [-1, 1], H and W multiples of the patch size.

        Returns:
            ``(B, N, enc_embed_dim)`` tokens after ``enc_norm``, ``N = H*W/p^2`` row-major.
        """
        c = self.config
        x = self.patch_embed(img)
        rope = self._rope(self.grid(img.shape[-2:]), c.enc_num_heads, c.enc_embed_dim, img.device)
        for block in self.enc_blocks:
            x = block(x, rope)
        return self.enc_norm(x)

    def decode(
        self,
        enc1: torch.Tensor,
        enc2: torch.Tensor,
        grid1: tuple[int, int],
        grid2: tuple[int, int],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run both decoders in lock-step.

        Args:
            enc1, enc2: ``(B, N1, enc_dim)``, ``(B, N2, enc_dim)`` encodings of views 1 and 2.
            grid1, grid2: their token grids ``(h, w)``.

        Returns:
            For each view, the token maps at :attr:`head_hooks` of the list
            ``[encoder output, decoder block 1, ..., block D]``; the last block gets ``dec_norm``.
        """
        c = self.config
        rope1 = self._rope(grid1, c.dec_num_heads, c.dec_embed_dim, enc1.device)
        rope2 = self._rope(grid2, c.dec_num_heads, c.dec_embed_dim, enc1.device)
        hooks = self.head_hooks
        out1 = [enc1] if 0 in hooks else []
        out2 = [enc2] if 0 in hooks else []
        f1, f2 = self.decoder_embed(enc1), self.decoder_embed(enc2)
        for depth, (block1, block2) in enumerate(zip(self.dec_blocks, self.dec_blocks2), start=1):
            # Both decoders read the previous layer's outputs of both views.
            f1, f2 = block1(f1, f2, rope1, rope2), block2(f2, f1, rope2, rope1)
            if depth == c.dec_depth:
                f1, f2 = self.dec_norm(f1), self.dec_norm(f2)
            if depth in hooks:
                out1.append(f1)
                out2.append(f2)
        return out1, out2

    def predict(
        self, which: int, hooked: list[torch.Tensor], image_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Head ``which`` (1 or 2) in float32 with autocast disabled.

        Returns:
            ``pts3d`` ``(B, H, W, 3)`` and ``conf`` ``(B, H, W)`` float32; both in view 1's camera
            frame (head 2 predicts view 2's points in view 1's frame).
        """
        head = self.downstream_head1 if which == 1 else self.downstream_head2
        device_type = hooked[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            raw = head([t.float() for t in hooked], self.grid(image_hw))
            return postprocess(raw)

    def forward(
        self, img1: torch.Tensor, img2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of pairs, each image encoded here (the reference's way).

        Args:
            img1, img2: ``(B, 3, H1, W1)``, ``(B, 3, H2, W2)`` normalised images.

        Returns:
            ``pts3d_1`` ``(B, H1, W1, 3)``, ``conf_1`` ``(B, H1, W1)``, ``pts3d_2_in_1``
            ``(B, H2, W2, 3)``, ``conf_2`` ``(B, H2, W2)``, all in view 1's camera frame.
        """
        hw1, hw2 = tuple(img1.shape[-2:]), tuple(img2.shape[-2:])
        if hw1 == hw2:
            enc1, enc2 = self.encode(torch.cat((img1, img2))).chunk(2)
        else:
            enc1, enc2 = self.encode(img1), self.encode(img2)
        hooked1, hooked2 = self.decode(enc1, enc2, self.grid(hw1), self.grid(hw2))
        return (*self.predict(1, hooked1, hw1), *self.predict(2, hooked2, hw2))

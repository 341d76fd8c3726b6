"""Architecture of a DUSt3R network as a frozen configuration (torch-free).

The defaults are the released ``DUSt3R_ViTLarge_BaseDecoder_512_dpt`` model; :data:`PRESETS` names
the three released architectures. Every size the network code uses comes from here, never from a
constant in the layers, so the small random test models of ``../shared/reference`` build with the
same code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import WeightsError


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of a DUSt3R network (``AsymmetricCroCo3DStereo`` with ``RoPE100``).

    Attributes:
        enc_embed_dim, enc_depth, enc_num_heads: ViT encoder width, blocks, heads (head dim 64).
        dec_embed_dim, dec_depth, dec_num_heads: width, blocks, heads of each of the two
            decoders.
        head_type: ``"dpt"`` or ``"linear"`` pointmap head.
        img_size: ``(H, W)`` the checkpoint was trained at; RoPE has no positional table, so this
            only tells the 224 model from the 512 one (what the image loader should produce).
        patch_size: pixels per token side.
        mlp_ratio: MLP hidden width / token width.
        rope_base: RoPE-2D frequency base (100 for ``RoPE100``).
        norm_eps: epsilon of every LayerNorm.
        dpt_layer_dims: channels of the four DPT reassemble stages.
        dpt_feature_dim: channels of the DPT fusion path.
        dpt_last_dim: channels before the DPT output conv.
    """

    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    head_type: str = "dpt"
    img_size: tuple[int, int] = (512, 512)
    patch_size: int = 16
    mlp_ratio: float = 4.0
    rope_base: float = 100.0
    norm_eps: float = 1e-6
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 128

    def __post_init__(self) -> None:
        if self.head_type not in ("dpt", "linear"):
            raise ValueError(f"head_type must be 'dpt' or 'linear', not {self.head_type!r}")
        for dim, heads in ((self.enc_embed_dim, self.enc_num_heads),
                           (self.dec_embed_dim, self.dec_num_heads)):
            # RoPE-2D splits each head in four quarters (y and x, two rotated halves each).
            if dim % heads or (dim // heads) % 4:
                raise ValueError(f"width {dim} with {heads} heads: the head width must be a "
                                 "multiple of 4")
        if self.head_type == "dpt" and self.dec_depth < 4:
            raise ValueError("the DPT head hooks four decoder depths; dec_depth must be >= 4")
        object.__setattr__(self, "img_size", tuple(int(v) for v in self.img_size))
        object.__setattr__(self, "dpt_layer_dims", tuple(int(v) for v in self.dpt_layer_dims))

    @property
    def dpt_hooks(self) -> tuple[int, int, int, int]:
        """Indices into ``[encoder output, decoder block 1..dec_depth]`` that feed the DPT head."""
        d = self.dec_depth
        return (0, d * 2 // 4, d * 3 // 4, d)

    @classmethod
    def from_constructor_args(cls, args: dict[str, Any]) -> ModelConfig:
        """Build from the official constructor arguments (a ``config.json`` or golden fixture).

        Accepts the HF ``config.json`` keys and the golden files' ``config_json`` (with an optional
        ``dpt`` sub-dict). Anything that changes the computation in a way this implementation does
        not support (another output mode, depth/conf mode, position embedding) is refused.

        Raises:
            WeightsError: unsupported architecture.
        """
        _require(args, "output_mode", "pts3d")
        _require(args, "pos_embed", "RoPE100")
        if _mode(args.get("depth_mode", ("exp", "-inf", "inf"))) != ("exp", -math.inf, math.inf):
            raise WeightsError(f"unsupported depth_mode {args.get('depth_mode')!r}")
        if _mode(args.get("conf_mode", ("exp", 1, "inf"))) != ("exp", 1.0, math.inf):
            raise WeightsError(f"unsupported conf_mode {args.get('conf_mode')!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: args[k] for k in fields if k in args}
        if "img_size" in kwargs:
            size = kwargs["img_size"]
            kwargs["img_size"] = (size, size) if isinstance(size, int) else tuple(size)
        dpt = args.get("dpt") or {}
        for key in ("layer_dims", "feature_dim", "last_dim"):
            if key in dpt:
                kwargs[f"dpt_{key}"] = tuple(dpt[key]) if key == "layer_dims" else dpt[key]
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"unsupported architecture: {exc}") from exc


def _require(args: dict[str, Any], key: str, value: str) -> None:
    if args.get(key, value) != value:
        raise WeightsError(f"unsupported {key} {args[key]!r} (only {value!r} is implemented)")


def _mode(mode: Any) -> tuple[str, float, float]:
    """``("exp", "-inf", "inf")`` / ``["exp", -Infinity, Infinity]`` -> ``("exp", -inf, inf)``."""
    try:
        name, vmin, vmax = mode
        return str(name), float(vmin), float(vmax)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"unreadable output mode {mode!r}") from exc


PRESETS: dict[str, ModelConfig] = {
    "512_dpt": ModelConfig(),
    "512_linear": ModelConfig(head_type="linear"),
    "224_linear": ModelConfig(head_type="linear", img_size=(224, 224)),
}
"""The three released architectures (see :data:`.registry.WEIGHTS` for the files)."""

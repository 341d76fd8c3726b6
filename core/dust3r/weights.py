"""Loading DUSt3R weights safely: ``.pth`` (restricted unpickling) or ``model.safetensors``.

The architecture is read from the state dict itself (tensor names and shapes), completed by the
few numbers shapes cannot tell (heads per layer, training resolution) from ``config.json`` or,
for ``.pth`` files, by pattern-matching keyword values in the ``args.model`` constructor string.
That string is never evaluated. The state dict must then match the network's keys and shapes
exactly, so a truncated, foreign or other-architecture file is refused with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from .config import PRESETS, ModelConfig
from .model import Dust3rNet
from .safetensors_io import read_safetensors

log = logging.getLogger(__name__)

_DPT_ALIAS = re.compile(r"^(downstream_head[12]\.dpt\.scratch\.)layer_rn\.([0-3])\.weight$")
_INT_KWARG = re.compile(r"\b(enc_num_heads|dec_num_heads)\s*=\s*(\d+)")
_IMG_SIZE_KWARG = re.compile(r"\bimg_size\s*=\s*\(?\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)?")
_STR_KWARG = re.compile(r"\b(pos_embed|output_mode|head_type)\s*=\s*['\"](\w+)['\"]")
_UNSUPPORTED_GLOBAL = re.compile(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)")
_MODE_KWARG = re.compile(r"\b(depth_mode|conf_mode)\s*=\s*\(([^)]*)\)")


def canonical_state_dict(
    state: dict[str, torch.Tensor], source: str | Path
) -> dict[str, torch.Tensor]:
    """Resolve the DPT projection aliases to the names our network registers.

    Official checkpoints hold the DPT stage projections twice, as ``scratch.layer{1..4}_rn`` and
    ``scratch.layer_rn.{0..3}`` (one module under two names). We keep ``layer{k}_rn``: the alias is
    dropped on purpose when both are present (after checking they agree) and renamed when it is
    the only one (some converted files keep a single name).

    Raises:
        WeightsError: the two names hold different tensors.
    """
    out = {}
    for key, value in state.items():
        match = _DPT_ALIAS.match(key)
        if match is None:
            out.setdefault(key, value)
            continue
        canonical = f"{match[1]}layer{int(match[2]) + 1}_rn.weight"
        if canonical in state:
            if not _same_tensor(state[canonical], value):
                raise WeightsError(f"{source}: {key} and {canonical} should be the same tensor "
                                   "but differ; the file is corrupt.")
        else:
            out[canonical] = value
    return out


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values (meta tensors, a shape-only inventory, compare by shape)."""
    return a.shape == b.shape and (a.is_meta or b.is_meta or torch.equal(a, b))


def _count_blocks(state: dict[str, Any], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    return len({int(m[1]) for key in state if (m := pattern.match(key))})


def config_from_state_dict(
    state: dict[str, Any], declared: dict[str, Any], source: str | Path
) -> ModelConfig:
    """Architecture from tensor shapes, completed by ``declared`` constructor arguments.

    Args:
        state: canonical state dict (names -> arrays or tensors with ``.shape``).
        declared: constructor arguments from ``config.json`` or parsed from ``args.model``; used
            for what shapes cannot tell (heads, ``img_size``) and checked against the shapes.

    Raises:
        WeightsError: not a DUSt3R state dict, or declared sizes that contradict the tensors.
    """
    try:
        patch = state["patch_embed.proj.weight"].shape
        enc_dim, dec_dim = patch[0], state["decoder_embed.weight"].shape[0]
        fc1 = state["enc_blocks.0.mlp.fc1.weight"].shape
    except KeyError as exc:
        raise WeightsError(f"{source} is not a DUSt3R checkpoint: it has no tensor {exc}.") from exc
    is_dpt = any(key.startswith("downstream_head1.dpt.") for key in state)
    found: dict[str, Any] = {
        "enc_embed_dim": enc_dim,
        "enc_depth": _count_blocks(state, "enc_blocks"),
        "dec_embed_dim": dec_dim,
        "dec_depth": _count_blocks(state, "dec_blocks"),
        "patch_size": patch[-1],
        "mlp_ratio": fc1[0] / fc1[1],
        "head_type": "dpt" if is_dpt else "linear",
    }
    if is_dpt:
        head = "downstream_head1.dpt."
        try:
            found["dpt_layer_dims"] = tuple(
                state[f"{head}act_postprocess.{k}.0.weight"].shape[0] for k in range(4)
            )
            found["dpt_feature_dim"] = state[f"{head}scratch.layer1_rn.weight"].shape[0]
            found["dpt_last_dim"] = state[f"{head}head.2.weight"].shape[0]
        except KeyError as exc:
            raise WeightsError(f"{source}: DPT head without tensor {exc}; not a DUSt3R "
                               "checkpoint or a truncated one.") from exc
    for key, value in found.items():
        if key in declared and declared[key] != value:
            raise WeightsError(f"{source}: the file declares {key}={declared[key]!r} but its "
                               f"tensors have {key}={value!r}; the file is inconsistent.")
    args = dict(declared)
    args.update(found)
    for prefix, dim in (("enc", enc_dim), ("dec", dec_dim)):
        # All released models use 64-wide heads; the declared count wins when present.
        args.setdefault(f"{prefix}_num_heads", max(dim // 64, 1))
    if warning := assumed_size_warning(declared, found["head_type"], source):
        log.warning("%s", warning)
    return ModelConfig.from_constructor_args(args)


def assumed_size_warning(declared: dict[str, Any], head_type: str, source: str | Path) -> str:
    """The warning for a linear model whose files do not say whether it is the 224 or the 512
    one (the shapes cannot tell; 512 is assumed), else ``""``."""
    if "img_size" in declared or head_type == "dpt":
        return ""
    return f"{source}: no config tells 224 from 512 for this linear model; assuming 512."


def parse_constructor_string(text: str) -> dict[str, Any]:
    """Pick the keyword values we need out of an official ``args.model`` string, by pattern.

    Example: ``"AsymmetricCroCo3DStereo(..., img_size=(224, 224), enc_num_heads=16, ...)"`` gives
    ``{"img_size": (224, 224), "enc_num_heads": 16, ...}``. Nothing is evaluated.
    """
    found: dict[str, Any] = {key: int(value) for key, value in _INT_KWARG.findall(text)}
    if m := _IMG_SIZE_KWARG.search(text):
        found["img_size"] = (int(m[1]), int(m[2] or m[1]))
    found.update(dict(_STR_KWARG.findall(text)))
    for key, body in _MODE_KWARG.findall(text):
        found[key] = tuple(part.strip().strip("'\"") for part in body.split(","))
    return found


def _require_checkpoint_header(path: Path) -> None:
    """Refuse at once a file that is empty or is no PyTorch file at all (a web page saved under
    the checkpoint's name, a download that never started): ``torch.save`` writes a zip archive
    (``PK``), older versions a pickle (protocol byte ``0x80``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise WeightsError(f"{path} cannot be opened ({exc}).") from exc
    if not head:
        raise WeightsError(f"{path} is empty (0 bytes). Download it again.")
    if not head.startswith((b"PK", b"\x80")):
        looks_like = " (it looks like a web page)" if head.lstrip()[:1] == b"<" else ""
        raise WeightsError(
            f"{path} is not a PyTorch checkpoint{looks_like}: it starts with {head[:16]!r}. "
            "The download may have saved an error or login page instead; download it again."
        )


def _unreadable(path: Path, exc: BaseException) -> WeightsError:
    reason = str(exc).split(". ")[0]
    return WeightsError(f"{path} cannot be read as a PyTorch checkpoint; it is truncated or not a "
                        f"checkpoint{f' ({reason})' if reason else ''}. Download it again.")


def read_pth(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """State dict and declared arguments of a ``.pth`` checkpoint, unpickled restrictively.

    Only tensors, plain containers and ``argparse.Namespace`` (the training arguments that
    official checkpoints carry) are allowed; anything else is refused by ``weights_only``.
    """
    _require_checkpoint_header(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = _UNSUPPORTED_GLOBAL.search(str(exc))
        if culprit is None and "Weights only load failed" not in str(exc):
            raise _unreadable(path, exc) from exc  # e.g. "invalid load key": not a pickle at all
        raise WeightsError(
            f"{path} was refused: it contains Python objects that are not plain weights"
            f"{f' ({culprit[1]})' if culprit else ''}. Use an official DUSt3R checkpoint."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, exc) from exc
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        state, args = ckpt["model"], ckpt.get("args")
    elif isinstance(ckpt, dict):
        state, args = ckpt, None
    else:
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a state dict.")
    model_string = getattr(args, "model", None)
    declared = parse_constructor_string(model_string) if isinstance(model_string, str) else {}
    return state, declared


def read_safetensors_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """State dict of ``model.safetensors`` and the arguments of ``config.json`` beside it."""
    arrays, _ = read_safetensors(path)
    config_path = path.with_name("config.json")
    declared: dict[str, Any] = {}
    if config_path.is_file():
        try:
            # The official config.json writes -Infinity/Infinity, which Python's json accepts.
            declared = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise WeightsError(f"{config_path} is not readable JSON: {exc}") from exc
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, declared


def check_state_dict(state: dict[str, Any], model: torch.nn.Module, source: str | Path) -> None:
    """Require exactly the model's keys with the model's shapes.

    Raises:
        WeightsError: naming the file and the first missing / unexpected / mis-shaped keys.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            problems.append(f"{len(keys)} {label} ({', '.join(keys[:3])}"
                            f"{', ...' if len(keys) > 3 else ''})")
    if problems:
        raise WeightsError(f"{source} does not fit the DUSt3R network it describes: "
                           f"{'; '.join(problems)}. It is another model's checkpoint or a damaged "
                           "file; use one of the released DUSt3R checkpoints.")


def preset_name(config: ModelConfig) -> str | None:
    """Name of the preset equal to ``config``, or ``None`` for other sizes."""
    return next((name for name, preset in PRESETS.items() if preset == config), None)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Dust3rNet:
    """Load a DUSt3R checkpoint into our network, in eval mode without gradients.

    Args:
        path: a ``.pth`` checkpoint, a ``.safetensors`` file (with ``config.json`` beside it), or
            a folder holding ``model.safetensors``.
        device: where to put the float32 weights.

    Raises:
        WeightsError: missing, unreadable, truncated, foreign or inconsistent file; the message
            names the file and the reason.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        state, declared = read_safetensors_checkpoint(path)
    else:
        state, declared = read_pth(path)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: the state dict holds values that are not tensors.")
    state = canonical_state_dict(state, path)
    config = config_from_state_dict(state, declared, path)
    with torch.device("meta"):
        model = Dust3rNet(config)
    check_state_dict(state, model, path)
    state = {k: v.to(torch.float32) for k, v in state.items()}
    # assign=True adopts the loaded tensors instead of copying them into fresh parameters.
    model.load_state_dict(state, strict=True, assign=True)
    model.name = path.parent.name if path.name == "model.safetensors" else path.stem
    model.load_warnings = [w for w in [assumed_size_warning(declared, config.head_type, path)] if w]
    log.info("Loaded %s (%s)", path.name, preset_name(config) or "custom size")
    return model.to(device).eval().requires_grad_(False)

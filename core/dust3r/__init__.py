"""DUSt3R: our implementation of the network, its weights and the pairwise inference engine.

Torch-free modules (safe in Blender's process): :mod:`.config`, :mod:`.registry`,
:mod:`.download`, :mod:`.safetensors_io`. The others import torch and run in the worker:
:mod:`.model` (``Dust3rNet``), :mod:`.weights` (``load_model``), :mod:`.inference`
(``run_pairs``). The names below are resolved lazily so that importing this package never
loads torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ModelConfig": ".config",
    "PRESETS": ".config",
    "WEIGHTS": ".registry",
    "WeightsInfo": ".registry",
    "Dust3rNet": ".model",
    "load_model": ".weights",
    "run_pairs": ".inference",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)

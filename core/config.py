"""The job description shared by the Blender side, the worker and headless scripts.

A :class:`JobConfig` is what the worker reads from ``job.json``. Backend-specific settings travel
in ``options`` and are checked by the backend's own frozen options dataclass (``from_dict`` raises
on unknown keys, so a typo never silently does nothing).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FormatError, InputError

JOB_FORMAT_VERSION = 1

BACKEND_NAMES = ("classical", "dust3r", "synthetic", "result_file")
"""Backends a job may name; see :mod:`.backends`."""

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class JobConfig:
    """One reconstruction job.

    Attributes:
        images: absolute paths of the input photos, in the order the user gave them (sorted file
            names for a folder). Order matters for sliding-window graphs and animated cameras.
        backend: one of :data:`BACKEND_NAMES`.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``; ``auto`` picks CUDA, then MPS, then CPU.
        options: backend-specific settings (plain JSON values), validated by the backend.
        cache_dir: folder for reusable intermediate files (pair predictions); empty = no cache.
        seed: random seed; a fixed seed makes a job deterministic.
    """

    images: tuple[str, ...]
    backend: str = "classical"
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise InputError(
                f"Unknown backend {self.backend!r}; choose one of {', '.join(BACKEND_NAMES)}."
            )
        if self.device not in DEVICES:
            raise InputError(f"Unknown device {self.device!r}; choose one of {', '.join(DEVICES)}.")
        object.__setattr__(self, "images", tuple(str(p) for p in self.images))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["images"] = list(self.images)
        d["version"] = JOB_FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobConfig:
        d = dict(d)
        version = d.pop("version", None)
        if version != JOB_FORMAT_VERSION:
            raise FormatError(
                f"Job file version {version!r} is not supported (expected {JOB_FORMAT_VERSION}); "
                "the extension and its worker are from different releases."
            )
        return cls(**strict_fields(cls, d, "job"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> JobConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise FormatError(f"Cannot read job file {path}: {exc}") from exc
        return cls.from_dict(data)


def strict_fields(cls: type, d: dict[str, Any], what: str) -> dict[str, Any]:
    """Return ``d`` after checking that every key is a field of dataclass ``cls``.

    Raises:
        InputError: naming the unknown keys and the accepted ones.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(
            f"Unknown {what} option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(names))}."
        )
    return d

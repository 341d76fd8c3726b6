"""The classical backend's entry point: photos -> SfM cameras (pycolmap) -> dense MVS -> result.

Job options (all optional, flat, checked strictly): the fields of :class:`.sfm.SfmOptions`
(``matcher``, ``camera_model``, ``intrinsics``, ...) and of :class:`.mvs.MvsOptions`
(``resolution``, ``num_hypotheses``, ``window``, ...).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import JobConfig
from ..errors import InputError
from ..images import load_photo
from ..progress import Progress
from ..result import ImageResult, SceneResult
from .mvs import MvsOptions, dense_from_cameras
from .sfm import SfmOptions, run_sfm

log = logging.getLogger(__name__)

CONF_THRESHOLD = 0.0
"""Suggested mask threshold: rejected pixels have conf 0; kept ones 0.5 * (NCC + share of agreeing
neighbours), so raising it towards 1 keeps only the best-supported depths."""

_SPARSE_SHARE = 0.3  # share of the job's progress bar spent on SfM


@dataclass(frozen=True)
class ClassicalOptions:
    """All settings of the classical backend (see :class:`SfmOptions` and :class:`MvsOptions`)."""

    sfm: SfmOptions = field(default_factory=SfmOptions)
    mvs: MvsOptions = field(default_factory=MvsOptions)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ClassicalOptions:
        """Split flat job options between the two stages.

        Raises:
            InputError: an unknown option or a value of the wrong type.
        """
        parts: dict[type, dict[str, Any]] = {SfmOptions: {}, MvsOptions: {}}
        defaults = {
            f.name: (owner, getattr(owner(), f.name))
            for owner in parts
            for f in dataclasses.fields(owner)
        }
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise InputError(
                f"Unknown classical option(s) {', '.join(unknown)}; accepted: "
                f"{', '.join(sorted(defaults))}."
            )
        for name, value in options.items():
            owner, default = defaults[name]
            expected = (int, float) if isinstance(default, float) else type(default)
            wrong_bool = isinstance(value, bool) != isinstance(default, bool)
            if wrong_bool or not isinstance(value, expected):
                raise InputError(
                    f"Classical option {name}={value!r} should be a {type(default).__name__}."
                )
            parts[owner][name] = value
        return cls(sfm=SfmOptions(**parts[SfmOptions]), mvs=MvsOptions(**parts[MvsOptions]))


def _torch_device(requested: str) -> tuple[str, str]:
    """``cuda`` when asked for (or ``auto``) and available, else ``cpu`` (MPS is not used); and a
    warning for the result when CUDA was asked for but is missing ("" otherwise)."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda", ""
    if requested == "cuda":
        return "cpu", ("CUDA was requested but the worker's PyTorch cannot use it (no NVIDIA GPU "
                       "or a CPU-only build); dense stereo ran on the CPU.")
    return "cpu", ""


def run(job: JobConfig, progress: Progress) -> SceneResult:
    """Reconstruct ``job.images`` with SfM + dense MVS.

    Raises:
        InputError: fewer than two photos, a missing or unreadable photo, a bad option.
        ReconstructionFailed: SfM could not register any pair of photos (the message says why).
        Cancelled: the user cancelled (checked between stages and between images).
    """
    options = ClassicalOptions.from_dict(job.options)
    missing = [p for p in job.images if not Path(p).is_file()]
    if missing:
        raise InputError(f"Photo(s) not found: {', '.join(missing)}.")
    progress("features", 0.0, f"{len(job.images)} photos")
    sparse = run_sfm(list(job.images), options.sfm, progress.sub(0.0, _SPARSE_SHARE), job.seed)
    progress("dense", _SPARSE_SHARE, f"{len(sparse.files)} cameras registered")
    photos = [load_photo(path) for path in sparse.files]
    device, device_warning = _torch_device(job.device)
    dense = dense_from_cameras(
        photos,
        sparse.K_photo,
        sparse.cam2world,
        options.mvs,
        progress.sub(_SPARSE_SHARE, 1.0),
        points_world=sparse.points,
        visible=sparse.visible,
        device=device,
    )
    warnings = list(sparse.warnings)
    if device_warning:
        warnings.append(device_warning)
    images = []
    empty = []
    for k, view in enumerate(dense):
        if (view.conf > CONF_THRESHOLD).mean() < 0.01:
            empty.append(Path(sparse.files[k]).name)
        images.append(
            ImageResult(
                file=sparse.files[k],
                photo_size=sparse.photo_sizes[k],
                K=view.K,
                cam2world=sparse.cam2world[k],
                photo_from_map=view.photo_from_map,
                pts3d_world=view.pts3d_world,
                conf=view.conf,
                colors=view.colors,
                depth=view.depth,
            )
        )
    if empty:
        warnings.append(
            f"No reliable dense depth for {len(empty)} of {len(dense)} registered photos "
            f"({', '.join(empty)}): too little texture or too little overlap with other photos. "
            "Their cameras and the sparse points are still in the result."
        )
    for message in warnings[len(sparse.warnings) :]:
        log.warning(message)
    progress("dense", 1.0, "done")
    return SceneResult(
        images=images,
        backend="classical",
        conf_kind="unit",
        conf_threshold=CONF_THRESHOLD,
        sparse_points=sparse.points.astype(np.float32),
        sparse_colors=sparse.colors,
        unregistered=sparse.unregistered,
        warnings=warnings,
    )

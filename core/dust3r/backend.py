"""The DUSt3R backend: photos -> pairwise network predictions (cached) -> global alignment.

``run(job, progress) -> SceneResult``. Job options (``job.options``):

* ``weights``: checkpoint path (``.pth``, ``.safetensors`` or a folder), required;
* ``image_size`` (512 | 224), ``graph`` (``complete``, ``swin``, ``logwin``, ``oneref`` or a
  reference string such as ``"swin-3-noncyclic"``), ``window``, ``cyclic``, ``ref``,
  ``precision`` (``bf16`` | ``fp32``), ``batch_size``;
* ``exif_focal``: take each photo's focal length from its EXIF 35 mm-equivalent focal as a known
  focal for the alignment (photos without it keep an estimated focal; ignored when
  ``known_focals`` or ``known_intrinsics`` is given);
* every :class:`~core.align.options.AlignOptions` field (per-image lists follow ``job.images``).

The network's output is cached in ``job.cache_dir`` as a pair-predictions file named by a sha256 of
everything it depends on (image paths, modification times and sizes, image size, the weights
file, the graph, the precision), so re-aligning with other options skips the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..align import AlignOptions, align
from ..config import JobConfig, strict_fields
from ..errors import FormatError, InputError
from ..images import exif_camera, load_images
from ..pairs import make_pairs, parse_graph
from ..predictions import PREDICTIONS_FORMAT_VERSION, PairPredictions
from ..progress import Progress
from ..result import SceneResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkOptions:
    """The network half of the dust3r job options (see the module docstring)."""

    weights: str = ""
    image_size: int = 512
    graph: str = "complete"
    window: int | None = None
    cyclic: bool | None = None
    ref: int | None = None
    precision: str = "bf16"
    batch_size: int = 8
    exif_focal: bool = False

    def graph_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :func:`core.pairs.make_pairs` (explicit fields win)."""
        args = parse_graph(self.graph)
        for name in ("window", "cyclic", "ref"):
            if getattr(self, name) is not None:
                args[name] = getattr(self, name)
        return args


def split_options(options: dict[str, Any]) -> tuple[NetworkOptions, AlignOptions]:
    """Network and alignment options from ``job.options``; unknown keys raise InputError."""
    network_names = {f.name for f in dataclasses.fields(NetworkOptions)}
    align_names = {f.name for f in dataclasses.fields(AlignOptions)}
    unknown = sorted(set(options) - network_names - align_names)
    if unknown:
        raise InputError(f"Unknown dust3r option(s) {', '.join(unknown)}; accepted: "
                         f"{', '.join(sorted(network_names | align_names))}.")
    network = {k: v for k, v in options.items() if k in network_names}
    network = NetworkOptions(**strict_fields(NetworkOptions, network, "dust3r"))
    if not network.weights:
        raise InputError("The dust3r backend needs the 'weights' option: the path of a DUSt3R "
                         "checkpoint (download it from the add-on preferences).")
    aligned = AlignOptions.from_dict({k: v for k, v in options.items() if k in align_names})
    return network, aligned


def _file_stamp(path: str | Path) -> list:
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size]


def cache_key(files: list[str], network: NetworkOptions) -> str:
    """sha256 of everything the pair predictions depend on."""
    content = {
        "format": PREDICTIONS_FORMAT_VERSION,
        "images": [_file_stamp(f) for f in files],
        "weights": _file_stamp(network.weights),
        "image_size": network.image_size,
        "graph": network.graph_arguments(),
        "precision": network.precision,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _device(name: str) -> tuple[str, str]:
    """The torch device for the job's ``device`` (``auto``: CUDA, then MPS, then the CPU), and a
    warning for the result when the one asked for is not available here ("" otherwise)."""
    import torch

    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(),
                 "cpu": True}
    if name == "auto":
        return next(device for device, ok in available.items() if ok), ""
    if available[name]:
        return name, ""
    return "cpu", (f"{name.upper()} was requested but the worker's PyTorch cannot use it; "
                   "DUSt3R ran on the CPU.")


def _predict(job, network, images, progress, device: str) -> PairPredictions:
    """Run the network on the pairs (on ``device``), or read them from the cache."""
    cache = None
    if job.cache_dir:
        key = cache_key([im.file for im in images], network)
        cache = Path(job.cache_dir) / f"pairs-{key[:24]}.npz"
        if cache.is_file():
            try:
                preds = PairPredictions.load(cache)
                log.info("Pair predictions read from the cache %s", cache)
                return preds
            except FormatError as exc:
                log.warning("Ignoring the cache file: %s", exc)
    from .inference import run_pairs
    from .weights import load_model

    pairs = make_pairs(len(images), **network.graph_arguments())
    model = load_model(network.weights, device)
    preds = run_pairs(model, images, pairs, device=device,
                      precision=network.precision, batch_size=network.batch_size,
                      progress=progress)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        preds.save(cache)
    return preds


def _exif_focal(path: str) -> float | None:
    """The photo's EXIF focal in photo pixels, or None (also for unreadable files, which the
    image loader then reports)."""
    try:
        return exif_camera(path)[1]
    except InputError:
        return None


def run(job: JobConfig, progress: Progress) -> SceneResult:
    """Reconstruct ``job.images`` with DUSt3R and the global alignment."""
    network, align_options = split_options(job.options)
    if network.exif_focal and align_options.known_focals is None \
            and align_options.known_intrinsics is None:
        align_options = dataclasses.replace(
            align_options, known_focals=tuple(_exif_focal(f) for f in job.images))
    progress("images", 0.0, f"loading {len(job.images)} photos")
    images, skipped = load_images(list(job.images), size=network.image_size)
    loaded = {im.file for im in images}
    kept = [k for k, f in enumerate(job.images) if f in loaded]
    device, device_warning = _device(job.device)
    preds = _predict(job, network, images, progress.sub(0.02, 0.7), device)
    result = align(preds, align_options.for_images(kept), progress.sub(0.7, 1.0))
    result.unregistered = [*skipped, *result.unregistered]
    result.warnings = [f"Skipped {Path(s['file']).name}: {s['reason']}" for s in skipped] + \
        ([device_warning] if device_warning else []) + result.warnings
    return result

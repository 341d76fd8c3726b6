"""The DUSt3R backend: photos -> pairwise network predictions (cached) -> global alignment.

``run(job, progress) -> SceneResult``. Job options (``job.options``):

* ``weights``: checkpoint path (``.pth``, ``.safetensors`` or a folder), required;
* ``image_size`` (512 | 224), ``graph`` (``complete``, ``swin``, ``logwin``, ``oneref`` or a
  reference string such as ``"swin-3-noncyclic"``), ``window``, ``cyclic``, ``ref``,
  ``precision`` (``bf16`` | ``fp32``), ``batch_size``;
* ``exif_focal``: take each photo's focal length from its EXIF 35 mm-equivalent focal as a known
  focal for the alignment (photos without it keep an estimated focal and are named in a result
  warning; ignored, with a warning, when ``known_focals`` or ``known_intrinsics`` is given);
* every :class:`~core.align.options.AlignOptions` field (per-image lists follow ``job.images``).

The network's output is cached in ``job.cache_dir`` as a pair-predictions file named by a sha256 of
everything it depends on (image paths, modification times and sizes, image size, the weights
file, the graph, the precision), so re-aligning with other options skips the network. A cache
file that cannot be read is replaced; the least recently used files beyond
:data:`~core.predictions.CACHE_FILES_KEPT` are deleted after each write. Warnings about how the
network was run (a checkpoint at another resolution than it was trained at) are stored with the
predictions and repeated in every result aligned from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..align import AlignOptions, align
from ..config import JobConfig, strict_fields
from ..errors import FormatError, InputError
from ..images import exif_camera, load_images
from ..pairs import make_pairs, parse_graph
from ..predictions import (PREDICTIONS_FORMAT_VERSION, PairPredictions, cache_file,
                           prune_cache)
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
    """Run the network on the pairs (on ``device``), or read them from the cache.

    An unreadable cache file is logged and replaced. After writing one, the least recently used
    files beyond :data:`~core.predictions.CACHE_FILES_KEPT` are deleted.
    """
    cache = None
    if job.cache_dir:
        cache = cache_file(job.cache_dir, cache_key([im.file for im in images], network))
        if cache.is_file():
            try:
                preds = PairPredictions.load(cache)
            except FormatError as exc:
                log.warning("Ignoring the unreadable cache file %s; running the network again. "
                            "(%s)", cache, exc)
            else:
                log.info("Pair predictions read from the cache %s", cache)
                _mark_used(cache)
                return preds
    from .inference import run_pairs
    from .weights import load_model

    pairs = make_pairs(len(images), **network.graph_arguments())
    model = load_model(network.weights, device)
    preds = run_pairs(model, images, pairs, device=device,
                      precision=network.precision, batch_size=network.batch_size,
                      progress=progress)
    # The loader's only warning says it could not tell the training size and assumed one; a
    # size warning would then state that guess as a fact.
    preds.warnings = model.load_warnings or \
        _size_warning(model.name, model.config.img_size, network.image_size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        preds.save(cache)
        log.info("Pair predictions written to the cache %s", cache)
        prune_cache(cache.parent)
    return preds


def _mark_used(path: Path) -> None:
    """Set the cache file's modification time to now: :func:`prune_cache` keeps recent ones."""
    try:
        os.utime(path)
    except OSError as exc:  # a read-only cache still works; it is only pruned earlier
        log.warning("Could not mark the cache file %s as used: %s", path, exc)


def _size_warning(model_name: str, trained_size: tuple[int, int], image_size: int) -> list[str]:
    """A warning when the images' long side differs from the checkpoint's training size."""
    trained = max(trained_size)
    if trained == image_size:
        return []
    return [f"The checkpoint {model_name} was trained on {trained} px images; running it at "
            f"{image_size} px gives poor geometry. Use a resolution of {trained} "
            f"(--resolution {trained}) or a {image_size} px checkpoint."]


def _exif_focal(path: str) -> float | None:
    """The photo's EXIF focal in photo pixels, or None (also for unreadable files, which the
    image loader then reports)."""
    try:
        return exif_camera(path)[1]
    except InputError:
        return None


def _exif_focal_warnings(focals: tuple[float | None, ...] | None, files: tuple[str, ...],
                         loaded: set[str]) -> list[str]:
    """What ``exif_focal`` could not do, for the loaded photos (skipped ones are reported
    anyway); ``focals`` is None when the job gave the focals itself."""
    if focals is None:
        return ["exif_focal was ignored: known_focals or known_intrinsics gives the focal lengths."]
    missing = [Path(f).name for f, focal in zip(files, focals) if focal is None and f in loaded]
    if not missing:
        return []
    if len(missing) == len(loaded):
        return ["exif_focal had no effect: none of the photos has an EXIF focal length "
                "(35 mm equivalent); all focal lengths were estimated."]
    return [f"No EXIF focal length in {', '.join(missing)}: estimated."]


def run(job: JobConfig, progress: Progress) -> SceneResult:
    """Reconstruct ``job.images`` with DUSt3R and the global alignment."""
    network, align_options = split_options(job.options)
    align_options.check_photo_count(len(job.images))  # before the network, not after it
    exif_focals = None
    if network.exif_focal and align_options.known_focals is None \
            and align_options.known_intrinsics is None:
        exif_focals = tuple(_exif_focal(f) for f in job.images)
        align_options = dataclasses.replace(align_options, known_focals=exif_focals)
    progress("images", 0.0, f"loading {len(job.images)} photos")
    images, skipped = load_images(list(job.images), size=network.image_size)
    loaded = {im.file for im in images}
    kept = [k for k, f in enumerate(job.images) if f in loaded]
    device, device_warning = _device(job.device)
    preds = _predict(job, network, images, progress.sub(0.02, 0.7), device)
    result = align(preds, align_options.for_images(kept), progress.sub(0.7, 1.0))
    result.unregistered = [*skipped, *result.unregistered]
    focal_warnings = _exif_focal_warnings(exif_focals, job.images, loaded) \
        if network.exif_focal else []
    result.warnings = [f"Skipped {Path(s['file']).name}: {s['reason']}" for s in skipped] + \
        ([device_warning] if device_warning else []) + preds.warnings + focal_warnings + \
        result.warnings
    return result

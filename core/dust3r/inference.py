"""The pairwise inference engine: every image encoded once, pairs decoded in batches.

The reference runs the whole network per directed pair, encoding both images each time: for a
complete graph of N images that is 2N(N-1) encoder passes. Here each image is encoded once
(same-size images batched), and only the decoders and heads run per pair, with pairs of equal
image shapes batched together. Precision ``"bf16"`` autocasts the encoder and decoders to
bfloat16 (float16 on Apple MPS); the heads always run in float32; ``"fp32"`` is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from ..errors import InputError, OutOfMemoryError
from ..images import LoadedImage, normalize
from ..predictions import PairPredictions, ViewInfo
from ..progress import Progress
from .model import Dust3rNet

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


def autocast_context(device: torch.device, precision: str):
    """Autocast for ``precision`` on ``device``: bfloat16 on CPU/CUDA, float16 on MPS."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if device.type == "mps" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextmanager
def low_precision_linear_weights(model: Dust3rNet, device: torch.device, precision: str):
    """Hold the encoder's and decoders' Linear weights in the autocast dtype while inside.

    Autocast casts a float32 weight to bfloat16 on every call, and it does not cache casts of
    weights that need no gradient, so each pair would pay for converting the decoders again. The
    cast values are identical either way; here they are made once, and the float32 weights are
    put back on exit. The heads keep float32 weights (they run in float32).
    """
    if precision == "fp32":
        yield
        return
    dtype = torch.float16 if device.type == "mps" else torch.bfloat16
    saved = []
    try:
        for part in (model.enc_blocks, model.decoder_embed, model.dec_blocks, model.dec_blocks2):
            for layer in part.modules():
                if isinstance(layer, torch.nn.Linear):
                    saved.append((layer, layer.weight))
                    layer.weight = torch.nn.Parameter(layer.weight.to(dtype), requires_grad=False)
        yield
    finally:
        for layer, weight in saved:
            layer.weight = weight


def _is_out_of_memory(exc: BaseException) -> bool:
    # CUDA raises torch.OutOfMemoryError; MPS and the CPU allocator raise plain RuntimeErrors.
    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError)
        and ("out of memory" in text or "can't allocate memory" in text)
    )


def _groups(keys: Sequence, items: Sequence[int]) -> list[list[int]]:
    """``items`` grouped by ``keys[item]``, groups and items in first-seen order."""
    groups: dict = {}
    for item in items:
        groups.setdefault(keys[item], []).append(item)
    return list(groups.values())


def run_pairs(
    model: Dust3rNet,
    images: Sequence[LoadedImage],
    pairs: Sequence[tuple[int, int]],
    device: str | torch.device = "cpu",
    precision: str = "bf16",
    batch_size: int = 8,
    progress: Progress | None = None,
) -> PairPredictions:
    """Predict pointmaps for every directed pair.

    Args:
        model: the network (moved to ``device`` if it is elsewhere).
        images: network images (``rgb`` ``(H, W, 3)`` uint8, sides multiples of the patch size).
        pairs: directed edges ``(i, j)``: image i is view 1, j view 2.
        device: ``cpu``, ``cuda`` or ``mps``.
        precision: ``"bf16"`` (fast, autocast) or ``"fp32"`` (exact).
        batch_size: images per encoder batch and pairs per decoder batch; halved on
            out-of-memory.
        progress: reports ``("inference", fraction, message)`` per batch and cancels between
            batches.

    Returns:
        Predictions for ``pairs`` in their order, all images as views, float32 on the CPU.

    Raises:
        InputError: a bad pair index, precision or batch size.
        OutOfMemoryError: the device ran out of memory even at one pair per batch.
        Cancelled: the user cancelled.
    """
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, not {batch_size}.")
    edges = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(edges) == 0 or edges.min() < 0 or edges.max() >= len(images):
        raise InputError(f"Pairs must name images 0..{len(images) - 1}; got {pairs!r}.")
    device = torch.device(device)
    if next(model.parameters()).device != device:
        model = model.to(device)
    # The DPT heads are full-resolution float32 convolutions and dominate a pair's decode time;
    # oneDNN/cuDNN run them markedly faster in NHWC (same numbers to ~1e-7). Idempotent.
    for head in (model.downstream_head1, model.downstream_head2):
        head.to(memory_format=torch.channels_last)
    shapes = [tuple(im.rgb.shape[:2]) for im in images]
    patch = model.config.patch_size
    for im, (h, w) in zip(images, shapes):
        if h % patch or w % patch:
            raise InputError(f"{im.file}: network image {w}x{h} is not a multiple of {patch} "
                             "pixels; load images with core.images.load_images.")
    needed = sorted(set(edges.ravel().tolist()))
    batches = _Batches(batch_size, len(needed) + len(edges), progress or Progress(), device)
    batches.progress("inference", 0.0, f"{len(needed)} images, {len(edges)} pairs")
    encodings: dict[int, torch.Tensor] = {}
    results: dict[int, list[np.ndarray]] = {}

    def encode(batch: list[int]) -> None:
        img = torch.from_numpy(np.stack([normalize(images[k].rgb) for k in batch]))
        encodings.update(zip(batch, model.encode(img.to(device))))
        batches.done(len(batch), f"encoded {len(encodings)} of {len(needed)} images")

    def decode(batch: list[int]) -> None:
        hw1, hw2 = shapes[edges[batch[0], 0]], shapes[edges[batch[0], 1]]
        enc1 = torch.stack([encodings[int(i)] for i in edges[batch, 0]])
        enc2 = torch.stack([encodings[int(j)] for j in edges[batch, 1]])
        hooked1, hooked2 = model.decode(enc1, enc2, model.grid(hw1), model.grid(hw2))
        outputs = [t.cpu().numpy() for t in (*model.predict(1, hooked1, hw1),
                                            *model.predict(2, hooked2, hw2))]
        results.update((e, [t[n] for t in outputs]) for n, e in enumerate(batch))
        batches.done(len(batch), f"predicted {len(results)} of {len(edges)} pairs")

    with (torch.inference_mode(), autocast_context(device, precision),
          low_precision_linear_weights(model, device, precision)):
        for group in _groups(shapes, needed):
            batches.run(group, encode)
        for group in _groups([(shapes[i], shapes[j]) for i, j in edges], range(len(edges))):
            batches.run(group, decode)

    pts3d_i, conf_i, pts3d_j, conf_j = ([results[e][k] for e in range(len(edges))]
                                        for k in range(4))
    return PairPredictions(
        views=[ViewInfo(im.file, tuple(im.photo_size), im.photo_from_map, im.rgb)
               for im in images],
        edges=edges, pts3d_i=pts3d_i, conf_i=conf_i, pts3d_j=pts3d_j, conf_j=conf_j,
        model=model.name,
    )


class _Batches:
    """Runs work in batches, reports progress per batch and halves the batch size (for this
    and all later batches) whenever the device runs out of memory."""

    def __init__(self, batch_size: int, total: int, progress: Progress, device: torch.device):
        self.batch_size, self.total = batch_size, total
        self.progress, self.device = progress, device
        self.finished = 0

    def done(self, count: int, message: str) -> None:
        """Count ``count`` finished items, report, and raise Cancelled if cancel was asked."""
        self.finished += count
        self.progress("inference", self.finished / self.total, message)

    def run(self, items: list[int], work: Callable[[list[int]], None]) -> None:
        """Call ``work`` on consecutive batches of ``items``."""
        start = 0
        while start < len(items):
            batch = items[start : start + self.batch_size]
            try:
                work(batch)
            except RuntimeError as exc:
                if not _is_out_of_memory(exc):
                    raise
                self._shrink(exc)
                continue
            start += len(batch)

    def _shrink(self, exc: RuntimeError) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch_size == 1:
            raise OutOfMemoryError(
                f"The {self.device.type} device ran out of memory even with one image pair at a "
                "time. Use a smaller pair graph (sliding or log window, one reference), fewer "
                "images, the 224 model, or a device with more memory."
            ) from exc
        self.batch_size //= 2
        log.warning("Out of memory on %s; retrying with batches of %d.", self.device,
                    self.batch_size)

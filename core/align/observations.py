"""The pairwise pointmaps as flat arrays of observations on per-image pooled pixel grids.

Every edge ``e = (i, j)`` has two sides: image i's pointmap and image j's pointmap, both in camera
i's frame. For the camera optimisation each side is pooled over square pixel blocks (a robust
median: all pixels contribute, so the noise drops instead of being thrown away with skipped
pixels). A pooled side is a contiguous block of observations whose k-th entry is the k-th block of
that image, so per-pixel work is a gather and per-image sums are ``index_add``; nothing is padded
and memory grows with the edges actually used.

Non-finite points or confidences are masked (weight 0, point 0) and never propagate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..predictions import PairPredictions


@dataclass
class Side:
    """One edge side: observations ``start:stop`` are image ``image``'s pixels in edge ``edge``."""

    edge: int
    image: int
    first: bool
    start: int
    stop: int


@dataclass
class Observations:
    """Sampled pixels of every image and the edge-side observations of them.

    Attributes:
        rows, cols: per image the pixel coordinates of its pooled blocks' centres.
        image_start: ``(N + 1,)`` offsets of each image's pixels in the flat pixel arrays.
        uv: ``(M, 2)`` float64 map-grid pixel coordinates of the sampled pixels.
        pixel_image: ``(M,)`` int64 image of each pixel.
        pts: ``(K, 3)`` float64 predicted points (edge frame = camera i of the edge).
        weight: ``(K,)`` float64 log-confidence weights (0 where masked).
        conf: ``(K,)`` float64 raw confidences (0 where masked).
        obs_pixel, obs_edge: ``(K,)`` int64 flat pixel and edge of each observation.
        sides: the contiguous blocks.
    """

    rows: list[np.ndarray]
    cols: list[np.ndarray]
    image_start: np.ndarray
    uv: np.ndarray
    pixel_image: np.ndarray
    pts: np.ndarray
    weight: np.ndarray
    conf: np.ndarray
    obs_pixel: np.ndarray
    obs_edge: np.ndarray
    sides: list[Side]

    def image_pixels(self, image: int) -> slice:
        return slice(int(self.image_start[image]), int(self.image_start[image + 1]))


def side_arrays(
    preds: PairPredictions, edge: int, first: bool, rows: np.ndarray, cols: np.ndarray,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masked ``(pts (m, 3), weight (m,), conf (m,))`` of one side on given rows and columns."""
    pts = (preds.pts3d_i if first else preds.pts3d_j)[edge][rows][:, cols].reshape(-1, 3)
    conf = (preds.conf_i if first else preds.conf_j)[edge][rows][:, cols].reshape(-1)
    pts = pts.astype(dtype)
    conf = conf.astype(dtype)
    valid = np.isfinite(pts).all(1) & np.isfinite(conf)
    # log(conf) as the reference; a tiny floor keeps unit-confidence inputs usable.
    weight = np.log(np.maximum(np.where(valid, conf, 1), 1))
    weight = np.where(valid, np.maximum(weight, 1e-4), 0).astype(dtype)
    pts = np.where(valid[:, None], pts, 0).astype(dtype)
    return pts, weight, np.where(valid, conf, 0).astype(dtype)


def block_size(shape: tuple[int, int], max_pixels: int) -> int:
    """Side of the square pixel blocks that leave at most about ``max_pixels`` of an image."""
    h, w = shape
    return 1 if max_pixels <= 0 else max(1, int(np.ceil(np.sqrt(h * w / max_pixels))))


def pooled_side(
    preds: PairPredictions, edge: int, first: bool, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One side pooled over ``block x block`` pixel blocks: ``(pts, weight, conf)`` per block.

    A block's point is the component-wise median of its valid pixels' points (robust to the
    outliers a mean would drag along, and less noisy than any single pixel), its weight and
    confidence the means over the block. Every edge pools an image the same way, so the pooled
    points of different edges still describe the same surface samples.
    """
    h, w = (preds.pts3d_i if first else preds.pts3d_j)[edge].shape[:2]
    pts, weight, conf = side_arrays(preds, edge, first, np.arange(h), np.arange(w), np.float32)
    if block == 1:
        return pts.astype(np.float64), weight.astype(np.float64), conf.astype(np.float64)
    hb, wb = h // block, w // block

    def blocks(a: np.ndarray) -> np.ndarray:
        a = a.reshape(h, w, -1)[: hb * block, : wb * block]
        a = a.reshape(hb, block, wb, block, -1).transpose(0, 2, 1, 3, 4)
        return a.reshape(hb * wb, block * block, -1)

    p, wt, c = blocks(pts), blocks(weight)[..., 0], blocks(conf)[..., 0]
    p = torch.from_numpy(np.where(wt[..., None] > 0, p, np.nan))
    median = torch.nanmedian(p, dim=1).values.numpy()
    ok = np.isfinite(median).all(1)
    return (np.where(ok[:, None], median, 0).astype(np.float64), wt.mean(1).astype(np.float64),
            c.mean(1).astype(np.float64))


def build_observations(
    preds: PairPredictions, image_ids: list[int], edge_ids: list[int], max_pixels: int
) -> Observations:
    """Pool the sides of edges ``edge_ids`` over images ``image_ids`` (renumbered 0..).

    Args:
        preds: all predictions.
        image_ids: views to use; their position is the new image number.
        edge_ids: edges to use (both endpoints in ``image_ids``); position = new edge number.
        max_pixels: pooled pixels per image (0 = every pixel).
    """
    new_index = {old: new for new, old in enumerate(image_ids)}
    block = [block_size(preds.views[old].shape, max_pixels) for old in image_ids]
    rows, cols, uv, pixel_image, starts = [], [], [], [], [0]
    for new, old in enumerate(image_ids):
        h, w = preds.views[old].shape
        # Pixel coordinates of the block centres.
        r = np.arange(h // block[new]) * block[new] + (block[new] - 1) / 2
        c = np.arange(w // block[new]) * block[new] + (block[new] - 1) / 2
        rows.append(r)
        cols.append(c)
        vv, uu = np.meshgrid(r, c, indexing="ij")
        uv.append(np.stack([uu.ravel(), vv.ravel()], 1).astype(np.float64))
        pixel_image.append(np.full(uu.size, new, np.int64))
        starts.append(starts[-1] + uu.size)
    image_start = np.array(starts, np.int64)
    pts, weight, conf, obs_pixel, obs_edge, sides = [], [], [], [], [], []
    count = 0
    for new_e, old_e in enumerate(edge_ids):
        for first, old_img in zip((True, False), preds.edges[old_e]):
            img = new_index[int(old_img)]
            p, w, c = pooled_side(preds, old_e, first, block[img])
            pts.append(p)
            weight.append(w)
            conf.append(c)
            obs_pixel.append(np.arange(image_start[img], image_start[img + 1]))
            obs_edge.append(np.full(len(p), new_e, np.int64))
            sides.append(Side(new_e, img, first, count, count + len(p)))
            count += len(p)
    return Observations(
        rows=rows, cols=cols, image_start=image_start, uv=np.concatenate(uv),
        pixel_image=np.concatenate(pixel_image), pts=np.concatenate(pts),
        weight=np.concatenate(weight), conf=np.concatenate(conf),
        obs_pixel=np.concatenate(obs_pixel), obs_edge=np.concatenate(obs_edge), sides=sides,
    )

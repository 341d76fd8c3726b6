"""The pairwise pointmaps as flat arrays of observations on per-image pixel subgrids.

Every edge ``e = (i, j)`` has two sides: image i's pointmap and image j's pointmap, both in camera
i's frame. A side sampled on its image's subgrid is a contiguous block of observations whose k-th
entry is the k-th subgrid pixel of that image, so per-pixel work is a gather and per-image sums are
``index_add``; nothing is padded and memory grows with the edges actually used.

Non-finite points or confidences are masked (weight 0, point 0) and never propagate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        rows, cols: per image the sampled row and column indices of its map grid.
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
    """Masked ``(pts (m, 3), weight (m,), conf (m,))`` of one side on a subgrid."""
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


def subgrid(shape: tuple[int, int], max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Regular row/column samples of an ``(H, W)`` grid with at most about ``max_pixels``."""
    h, w = shape
    stride = 1 if max_pixels <= 0 else max(1, int(np.ceil(np.sqrt(h * w / max_pixels))))
    return np.arange(stride // 2, h, stride), np.arange(stride // 2, w, stride)


def build_observations(
    preds: PairPredictions, image_ids: list[int], edge_ids: list[int], max_pixels: int
) -> Observations:
    """Sample the sides of edges ``edge_ids`` over images ``image_ids`` (renumbered 0..).

    Args:
        preds: all predictions.
        image_ids: views to use; their position is the new image number.
        edge_ids: edges to use (both endpoints in ``image_ids``); position = new edge number.
        max_pixels: pixels per image on the subgrid (0 = all).
    """
    new_index = {old: new for new, old in enumerate(image_ids)}
    rows, cols, uv, pixel_image, starts = [], [], [], [], [0]
    for new, old in enumerate(image_ids):
        r, c = subgrid(preds.views[old].shape, max_pixels)
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
            p, w, c = side_arrays(preds, old_e, first, rows[img], cols[img])
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

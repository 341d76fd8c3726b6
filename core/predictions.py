"""Pairwise pointmap predictions: what the network writes and the global alignment reads.

For a directed edge ``(i, j)`` the network sees image ``i`` as view 1 and ``j`` as view 2 and
predicts, in **camera i's frame** (OpenCV axes, arbitrary scale):

* ``pts3d_i[e]`` ``(H_i, W_i, 3)``: the 3D point of every pixel of image i,
* ``pts3d_j[e]`` ``(H_j, W_j, 3)``: the 3D point of every pixel of image j,
* ``conf_i[e]``, ``conf_j[e]`` ``(H, W)``: raw confidences (>= 1 for DUSt3R).

The cache file is one ``.npz`` (no pickle): ``meta_json`` (uint8 bytes of a JSON object with
``format``, ``version``, ``model`` and ``views``) plus arrays ``edges`` ``(E, 2)`` int32,
``view{k}/colors`` and ``edge{e}/{pts3d_i,conf_i,pts3d_j,conf_j}``. See ``core/FORMATS.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FormatError

PREDICTIONS_FORMAT_VERSION = 1


@dataclass
class ViewInfo:
    """One input image as the network saw it.

    Attributes:
        file: path of the original photo.
        photo_size: ``(width, height)`` of the original photo after EXIF orientation.
        photo_from_map: ``(3, 3)`` float64 affine from network-image pixels to photo pixels.
        colors: ``(H, W, 3)`` uint8 RGB network image (defines the image's map grid).
    """

    file: str
    photo_size: tuple[int, int]
    photo_from_map: np.ndarray
    colors: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the network image."""
        return self.colors.shape[0], self.colors.shape[1]


@dataclass
class PairPredictions:
    """Predictions for a set of directed edges over ``views``.

    Attributes:
        views: the images, indexed by the numbers used in ``edges``.
        edges: ``(E, 2)`` int array of directed edges ``(i, j)``.
        pts3d_i, conf_i: per edge, image i's pointmap and confidence in camera i's frame.
        pts3d_j, conf_j: per edge, image j's pointmap (in camera i's frame) and confidence.
        model: what produced them (checkpoint name, ``"synthetic"``...).
    """

    views: list[ViewInfo]
    edges: np.ndarray
    pts3d_i: list[np.ndarray]
    conf_i: list[np.ndarray]
    pts3d_j: list[np.ndarray]
    conf_j: list[np.ndarray]
    model: str = ""

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        n_edges = len(self.edges)
        for name in ("pts3d_i", "conf_i", "pts3d_j", "conf_j"):
            if len(getattr(self, name)) != n_edges:
                raise FormatError(f"Pair predictions: {name} has {len(getattr(self, name))} "
                                  f"entries for {n_edges} edges.")
        for e, (i, j) in enumerate(self.edges):
            if not (0 <= i < len(self.views) and 0 <= j < len(self.views)):
                raise FormatError(f"Pair predictions: edge {e} ({i}, {j}) names a missing view.")
            for side, k in (("i", i), ("j", j)):
                shape = self.views[k].shape
                pts = getattr(self, f"pts3d_{side}")[e]
                conf = getattr(self, f"conf_{side}")[e]
                if pts.shape != (*shape, 3) or conf.shape != shape:
                    raise FormatError(
                        f"Pair predictions: edge {e} side {side} has shapes {pts.shape}, "
                        f"{conf.shape}; view {k} is {shape}."
                    )

    def save(self, path: str | Path) -> None:
        """Write the cache file atomically (a partial file is never left under ``path``)."""
        path = Path(path)
        meta = {
            "format": "photo-recon-pair-predictions",
            "version": PREDICTIONS_FORMAT_VERSION,
            "model": self.model,
            "views": [
                {
                    "file": v.file,
                    "photo_size": [int(x) for x in v.photo_size],
                    "photo_from_map": np.asarray(v.photo_from_map, float).tolist(),
                }
                for v in self.views
            ],
        }
        arrays = {
            "meta_json": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            "edges": self.edges.astype(np.int32),
        }
        for k, v in enumerate(self.views):
            arrays[f"view{k}/colors"] = np.asarray(v.colors, np.uint8)
        for e in range(len(self.edges)):
            arrays[f"edge{e}/pts3d_i"] = np.asarray(self.pts3d_i[e], np.float32)
            arrays[f"edge{e}/conf_i"] = np.asarray(self.conf_i[e], np.float32)
            arrays[f"edge{e}/pts3d_j"] = np.asarray(self.pts3d_j[e], np.float32)
            arrays[f"edge{e}/conf_j"] = np.asarray(self.conf_j[e], np.float32)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> PairPredictions:
        """Read a cache file.

        Raises:
            FormatError: not a cache file, another format version, or inconsistent arrays.
        """
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FormatError(f"Cannot read pair predictions {path}: {exc}") from exc
        with npz:
            try:
                meta = json.loads(npz["meta_json"].tobytes().decode())
            except (KeyError, ValueError) as exc:
                raise FormatError(f"{path} is not a pair-predictions file.") from exc
            if meta.get("format") != "photo-recon-pair-predictions":
                raise FormatError(f"{path} is not a pair-predictions file.")
            if meta.get("version") != PREDICTIONS_FORMAT_VERSION:
                raise FormatError(
                    f"{path} has pair-predictions format version {meta.get('version')!r}; this "
                    f"version reads {PREDICTIONS_FORMAT_VERSION}. Re-run the network."
                )
            try:
                views = [
                    ViewInfo(
                        file=m["file"],
                        photo_size=tuple(m["photo_size"]),
                        photo_from_map=np.array(m["photo_from_map"], float),
                        colors=npz[f"view{k}/colors"],
                    )
                    for k, m in enumerate(meta["views"])
                ]
                edges = npz["edges"]
                fields = {
                    name: [npz[f"edge{e}/{name}"] for e in range(len(edges))]
                    for name in ("pts3d_i", "conf_i", "pts3d_j", "conf_j")
                }
            except KeyError as exc:
                raise FormatError(f"{path} lacks array {exc}.") from exc
            return cls(views=views, edges=edges, model=meta.get("model", ""), **fields)

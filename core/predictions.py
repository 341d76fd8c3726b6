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
import logging
import re
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FormatError

log = logging.getLogger(__name__)

PREDICTIONS_FORMAT_VERSION = 1

_ZIP_MAGIC = b"PK"
CACHE_FILES_KEPT = 10
"""Cache files kept by :func:`prune_cache`: 10 files of 4 photos at 512 px take about 0.8 GB."""

_CACHE_NAME = re.compile(r"^pairs-[0-9a-f]{24}\.npz$")
_STALE_TMP_S = 3600.0  # a temporary file this old belongs to a worker that was killed while saving
# What reading a damaged or truncated archive raises, from the zip directory to the arrays.
_DAMAGED_FILE_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError)


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
        warnings: messages for the user about how they were made (e.g. a checkpoint run at
            another resolution than it was trained at); every result aligned from them repeats
            them.
    """

    views: list[ViewInfo]
    edges: np.ndarray
    pts3d_i: list[np.ndarray]
    conf_i: list[np.ndarray]
    pts3d_j: list[np.ndarray]
    conf_j: list[np.ndarray]
    model: str = ""
    warnings: list[str] = field(default_factory=list)

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
            "warnings": list(self.warnings),
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
            FormatError: for every file that cannot be read back: missing, not an ``.npz``,
                truncated or damaged, another format or version, missing or inconsistent arrays.
                The message names the file and says what to do.
        """
        path = Path(path)
        if not path.is_file():
            problem = "is a folder" if path.is_dir() else "does not exist"
            raise FormatError(f"The pair-predictions file {path} {problem}; give the path of a "
                              "pairs-<key>.npz file.")
        try:
            with open(path, "rb") as f:
                magic = f.read(2)
        except OSError as exc:
            raise FormatError(f"Cannot read pair predictions {path}: {exc.strerror or exc}.") \
                from exc
        # np.load takes any other file for a pickle ("Cannot load file containing pickled
        # data"), which misleads: an .npz is a zip archive.
        if not magic.startswith(_ZIP_MAGIC):
            raise FormatError(f"{path} is not a pair-predictions file: it is not an .npz (zip) "
                              "archive. Re-run the network.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                return cls._from_npz(npz, path)
        except _DAMAGED_FILE_ERRORS as exc:
            raise FormatError(f"{path} is damaged or truncated ({type(exc).__name__}: {exc}); "
                              "delete it and re-run the network.") from exc

    @classmethod
    def _from_npz(cls, npz: np.lib.npyio.NpzFile, path: Path) -> PairPredictions:
        """Build from an open ``.npz``; may raise the archive's read errors (see ``load``)."""

        def array(name: str) -> np.ndarray:
            if name not in npz.files:
                raise FormatError(f"{path} lacks the array {name!r}; it is damaged or not a "
                                  "complete pair-predictions file. Re-run the network.")
            return npz[name]

        if "meta_json" not in npz.files:
            raise FormatError(f"{path} is not a pair-predictions file (no 'meta_json').")
        try:
            meta = json.loads(npz["meta_json"].tobytes().decode())
        except ValueError as exc:
            raise FormatError(f"{path} is not a pair-predictions file: unreadable "
                              f"'meta_json' ({exc}).") from exc
        if not isinstance(meta, dict) or meta.get("format") != "photo-recon-pair-predictions":
            raise FormatError(f"{path} is not a pair-predictions file.")
        if meta.get("version") != PREDICTIONS_FORMAT_VERSION:
            raise FormatError(
                f"{path} has pair-predictions format version {meta.get('version')!r}; this "
                f"version reads {PREDICTIONS_FORMAT_VERSION}. Re-run the network."
            )
        try:
            views = [
                ViewInfo(
                    file=str(m["file"]),
                    photo_size=tuple(int(x) for x in m["photo_size"]),
                    photo_from_map=np.array(m["photo_from_map"], float).reshape(3, 3),
                    colors=array(f"view{k}/colors"),
                )
                for k, m in enumerate(meta["views"])
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path} has a malformed view list in 'meta_json' "
                              f"({type(exc).__name__}: {exc}). Re-run the network.") from exc
        edges = array("edges")
        fields = {
            name: [array(f"edge{e}/{name}") for e in range(len(edges))]
            for name in ("pts3d_i", "conf_i", "pts3d_j", "conf_j")
        }
        warnings = meta.get("warnings", [])
        return cls(views=views, edges=edges, model=str(meta.get("model", "")),
                   warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [],
                   **fields)


def cache_file(cache_dir: str | Path, key: str) -> Path:
    """The cache file for the hex digest ``key``: ``<cache_dir>/pairs-<key[:24]>.npz``."""
    return Path(cache_dir) / f"pairs-{key[:24]}.npz"


def prune_cache(cache_dir: str | Path, keep: int = CACHE_FILES_KEPT) -> list[Path]:
    """Delete all but the ``keep`` most recently used cache files in ``cache_dir``.

    A file's modification time is its last use (the backend touches a file it reads), so the
    files removed are those unused for longest. Only names written by :func:`cache_file` count,
    plus temporary files of interrupted saves older than an hour; nothing else there is touched.
    A file that cannot be deleted (open elsewhere on Windows) is logged and kept.

    Returns:
        The files removed.
    """
    entries = []
    stale = []
    for path in Path(cache_dir).glob("pairs-*.npz"):
        try:
            mtime = path.stat().st_mtime
        except OSError:  # removed meanwhile by a concurrent job
            continue
        if _CACHE_NAME.match(path.name):
            entries.append((mtime, path.name, path))
        elif _CACHE_NAME.match(path.name.removesuffix(".tmp.npz")) \
                and time.time() - mtime > _STALE_TMP_S:
            stale.append(path)
    entries.sort(reverse=True)
    removed = []
    for path in stale + [path for _, _, path in entries[max(keep, 0):]]:
        try:
            size_mb = path.stat().st_size / 2**20
            path.unlink()
        except OSError as exc:
            log.warning("Could not remove the old cache file %s: %s", path, exc)
            continue
        log.info("Removed the old cache file %s (%.0f MB)", path, size_mb)
        removed.append(path)
    return removed

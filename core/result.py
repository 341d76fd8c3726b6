"""The reconstruction result every backend produces and every consumer reads.

Conventions (used throughout the project):

* Cameras use OpenCV axes: x right, y down, z forward. ``cam2world`` maps camera coordinates to
  world coordinates (4x4, float64).
* Pixel coordinates: the centre of the top-left pixel of an array is (0, 0); pixel ``[v, u]`` of an
  ``(H, W)`` map has its centre at ``(u, v)``. ``K`` projects camera points to these coordinates:
  ``u = fx * x / z + cx``.
* Each image's dense maps live on a "map grid" of ``(H, W)`` pixels (the network resolution for
  DUSt3R, a working resolution for the classical backend). ``photo_from_map`` (3x3 affine) maps
  map-grid pixel coordinates to pixel coordinates of the original photo (after EXIF orientation),
  so ``K_photo = photo_from_map @ K`` are the intrinsics for the original photo.

On disk a result is a folder with ``result.json`` (metadata, cameras) and ``result.npz`` (arrays,
saved without pickle). The format is documented in ``core/FORMATS.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FormatError

RESULT_FORMAT_VERSION = 1

RESULT_FILE = "result.json"
"""The metadata file of a result folder (written last, so its presence means a complete result)."""


@dataclass
class ImageResult:
    """One registered photo: its camera and dense geometry.

    Attributes:
        file: path of the original photo.
        photo_size: ``(width, height)`` of the original photo after EXIF orientation.
        K: ``(3, 3)`` float64 intrinsics on the map grid (pixels).
        cam2world: ``(4, 4)`` float64 camera-to-world, OpenCV camera axes.
        photo_from_map: ``(3, 3)`` float64 affine from map-grid pixels to photo pixels.
        pts3d_world: ``(H, W, 3)`` float32 world point of every map pixel (NaN where unknown).
        conf: ``(H, W)`` float32 confidence, larger is better; units depend on the backend, see
            :attr:`SceneResult.conf_kind`. 0 where unknown.
        colors: ``(H, W, 3)`` uint8 RGB colour of every map pixel.
        depth: ``(H, W)`` float32 z-depth in the camera (same units as the world), or None.
        display_file: absolute path of an upright copy of the photo, written by the worker when
            the photo is stored sideways or mirrored with an EXIF orientation (Blender ignores
            EXIF orientation) or is HEIC/HEIF (Blender cannot read it); None when Blender can
            show the photo itself.
    """

    file: str
    photo_size: tuple[int, int]
    K: np.ndarray
    cam2world: np.ndarray
    photo_from_map: np.ndarray
    pts3d_world: np.ndarray
    conf: np.ndarray
    colors: np.ndarray
    depth: np.ndarray | None = None
    display_file: str | None = None

    @property
    def upright_file(self) -> str:
        """The file whose stored pixels are the EXIF-oriented photo (what ``photo_size`` and
        ``K_photo`` describe): the upright copy if there is one, else the photo itself. Anything
        that shows the photo without applying EXIF orientation (Blender) loads this file."""
        return self.display_file or self.file

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the map grid."""
        h, w = self.conf.shape
        return w, h

    @property
    def K_photo(self) -> np.ndarray:
        """``(3, 3)`` intrinsics in pixels of the original photo."""
        return self.photo_from_map @ self.K

    @property
    def name(self) -> str:
        """The photo's file name without folder and extension (used to name objects)."""
        return Path(self.file).stem

    def mask(self, conf_threshold: float) -> np.ndarray:
        """``(H, W)`` bool: finite points with confidence above ``conf_threshold``."""
        return (self.conf > conf_threshold) & np.isfinite(self.pts3d_world).all(axis=-1)


@dataclass
class SceneResult:
    """A reconstructed scene.

    Attributes:
        images: registered photos, in input order.
        backend: name of the backend that made it.
        conf_kind: what ``conf`` means: ``"dust3r"`` (raw network confidence, >= 1) or
            ``"unit"`` (0..1, classical multi-view consistency) or ``"synthetic"``.
        conf_threshold: suggested default threshold for :meth:`ImageResult.mask`.
        units: world units, ``"arbitrary"`` unless the scene was scaled.
        sparse_points: ``(M, 3)`` float32 sparse world points (SfM tie points) or None.
        sparse_colors: ``(M, 3)`` uint8 colours of ``sparse_points`` or None.
        unregistered: photos that could not be placed, each ``{"file": ..., "reason": ...}``.
        warnings: messages for the user (shown after import).
    """

    images: list[ImageResult]
    backend: str
    conf_kind: str = "unit"
    conf_threshold: float = 0.0
    units: str = "arbitrary"
    sparse_points: np.ndarray | None = None
    sparse_colors: np.ndarray | None = None
    unregistered: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def save(self, directory: str | Path) -> None:
        """Write ``result.json`` and ``result.npz`` into ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        meta_images = []
        for k, im in enumerate(self.images):
            meta_images.append(
                {
                    "file": im.file,
                    "photo_size": [int(v) for v in im.photo_size],
                    "size": list(im.size),
                    "K": np.asarray(im.K, float).tolist(),
                    "cam2world": np.asarray(im.cam2world, float).tolist(),
                    "photo_from_map": np.asarray(im.photo_from_map, float).tolist(),
                    "has_depth": im.depth is not None,
                }
            )
            if im.display_file is not None:
                meta_images[-1]["display_file"] = _stored_path(im.display_file, directory)
            arrays[f"image{k}/pts3d_world"] = np.asarray(im.pts3d_world, np.float32)
            arrays[f"image{k}/conf"] = np.asarray(im.conf, np.float32)
            arrays[f"image{k}/colors"] = np.asarray(im.colors, np.uint8)
            if im.depth is not None:
                arrays[f"image{k}/depth"] = np.asarray(im.depth, np.float32)
        if self.sparse_points is not None:
            arrays["sparse/points"] = np.asarray(self.sparse_points, np.float32)
            colors = self.sparse_colors
            if colors is None:
                colors = np.full((len(self.sparse_points), 3), 200, np.uint8)
            arrays["sparse/colors"] = np.asarray(colors, np.uint8)
        meta = {
            "format": "photo-recon-result",
            "version": RESULT_FORMAT_VERSION,
            "backend": self.backend,
            "conf_kind": self.conf_kind,
            "conf_threshold": float(self.conf_threshold),
            "units": self.units,
            "images": meta_images,
            "unregistered": self.unregistered,
            "warnings": self.warnings,
        }
        # Write arrays first and the JSON last: a folder with result.json is complete.
        tmp_npz = directory / "result.tmp.npz"
        np.savez(tmp_npz, **arrays)
        tmp_npz.replace(directory / "result.npz")
        tmp_json = directory / "result.json.tmp"
        tmp_json.write_text(json.dumps(meta, indent=1))
        tmp_json.replace(directory / RESULT_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> SceneResult:
        """Read a result folder written by :meth:`save`.

        Raises:
            FormatError: missing files, another format or version, inconsistent arrays.
        """
        directory = Path(directory)
        try:
            meta = json.loads((directory / RESULT_FILE).read_text())
            npz = np.load(directory / "result.npz", allow_pickle=False)
        except FileNotFoundError as exc:
            raise FormatError(
                f"The reconstruction result {directory} is gone (its cache folder was cleared, or "
                "the job folder removed as an old job); reconstruct the photos again."
            ) from exc
        except (OSError, ValueError) as exc:
            raise FormatError(f"Cannot read reconstruction result in {directory}: {exc}") from exc
        if meta.get("format") != "photo-recon-result":
            raise FormatError(f"{directory / 'result.json'} is not a reconstruction result.")
        if meta.get("version") != RESULT_FORMAT_VERSION:
            raise FormatError(
                f"Result in {directory} has format version {meta.get('version')!r}; this "
                f"extension reads version {RESULT_FORMAT_VERSION}. Re-run the reconstruction."
            )
        with npz:
            images = []
            for k, m in enumerate(meta["images"]):
                try:
                    im = ImageResult(
                        file=m["file"],
                        photo_size=tuple(m["photo_size"]),
                        K=np.array(m["K"], float),
                        cam2world=np.array(m["cam2world"], float),
                        photo_from_map=np.array(m["photo_from_map"], float),
                        pts3d_world=npz[f"image{k}/pts3d_world"],
                        conf=npz[f"image{k}/conf"],
                        colors=npz[f"image{k}/colors"],
                        depth=npz[f"image{k}/depth"] if m["has_depth"] else None,
                        display_file=_loaded_path(m.get("display_file"), directory),
                    )
                except KeyError as exc:
                    raise FormatError(f"Result in {directory} lacks {exc}.") from exc
                w, h = m["size"]
                if im.pts3d_world.shape != (h, w, 3) or im.colors.shape != (h, w, 3):
                    raise FormatError(f"Result in {directory}: image {k} arrays do not match size.")
                images.append(im)
            sparse = "sparse/points" in npz.files
            return cls(
                images=images,
                backend=meta["backend"],
                conf_kind=meta["conf_kind"],
                conf_threshold=meta["conf_threshold"],
                units=meta["units"],
                sparse_points=npz["sparse/points"] if sparse else None,
                sparse_colors=npz["sparse/colors"] if sparse else None,
                unregistered=meta["unregistered"],
                warnings=meta["warnings"],
            )


def _stored_path(path: str, directory: Path) -> str:
    """``path`` as written into ``directory``'s ``result.json``: relative to ``directory`` when it
    lies inside it (the worker writes upright copies into ``result.partial/`` and renames the
    folder; relative paths also survive moving the folder), else absolute."""
    try:
        return Path(path).resolve().relative_to(directory.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _loaded_path(stored: str | None, directory: Path) -> str | None:
    """Absolute path of a path written by :func:`_stored_path` (None stays None)."""
    if stored is None:
        return None
    return str((directory / stored).resolve())

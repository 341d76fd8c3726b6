"""Write a result as a COLMAP sparse model (text or binary), as Gaussian-splatting and NeRF tools
read it.

* ``cameras``: one ``PINHOLE`` camera per photo at the photo's own resolution, from ``K_photo``.
  COLMAP puts the centre of the top-left pixel at (0.5, 0.5), we put it at (0, 0), so its principal
  point is ours + 0.5.
* ``images``: the world-to-camera rotation as a unit quaternion ``qw qx qy qz`` (``qw >= 0``) and
  translation ``t`` (COLMAP's camera axes are OpenCV's), named by the photo's file name, with no
  2D observations.
* ``points3D``: confident points (or the sparse points) with their colours, error 0 and empty
  tracks.

The binary layout follows COLMAP's ``read_write_model``: little-endian, counts as uint64.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..result import ImageResult, SceneResult
from .points import PointSet, confident_points, sparse_points

log = logging.getLogger(__name__)

PINHOLE_MODEL_ID = 1

_POINT_DTYPE = np.dtype(
    [("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("track_length", "<u8")]
)
_CAMERA_DTYPE = np.dtype(
    [("id", "<i4"), ("model", "<i4"), ("width", "<u8"), ("height", "<u8"), ("params", "<f8", 4)]
)


def pinhole_params_corner(K: np.ndarray) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` of a ``(3, 3)`` K with the image corner as origin (pixel centres at
    half-integers), the convention of COLMAP, nerfstudio and instant-ngp."""
    K = np.asarray(K, np.float64)
    return float(K[0, 0]), float(K[1, 1]), float(K[0, 2] + 0.5), float(K[1, 2] + 0.5)


def world_to_camera_qt(cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q (4,) [qw, qx, qy, qz] with qw >= 0, t (3,))`` float64 of the inverse of a rigid pose."""
    c2w = np.asarray(cam2world, np.float64)
    rotation = c2w[:3, :3].T
    t = -rotation @ c2w[:3, 3]
    qx, qy, qz, qw = Rotation.from_matrix(rotation).as_quat()
    q = np.array([qw, qx, qy, qz])
    return (q if qw >= 0 else -q), t


def _image_names(images: list[ImageResult]) -> list[str]:
    names = [Path(im.file).name for im in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(
            f"Photos share the file name {', '.join(duplicates)}; COLMAP identifies images by "
            "name, so rename them before exporting."
        )
    return names


def _model_points(
    result: SceneResult, use_sparse: bool, conf_threshold: float | None, max_points: int, seed: int
) -> PointSet:
    if use_sparse:
        points = sparse_points(result)
        if points is not None:
            return points
        log.warning("The result has no sparse points; exporting its confident dense points.")
    return confident_points(result, conf_threshold, max_points, with_normals=False, seed=seed)


def _write_text(directory: Path, result: SceneResult, names: list[str], points: PointSet) -> None:
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(result.images)}",
    ]
    for k, im in enumerate(result.images):
        params = " ".join(repr(v) for v in pinhole_params_corner(im.K_photo))
        lines.append(f"{k + 1} PINHOLE {im.photo_size[0]} {im.photo_size[1]} {params}")
    (directory / "cameras.txt").write_text("\n".join(lines) + "\n")

    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(result.images)}, mean observations per image: 0",
    ]
    for k, (im, name) in enumerate(zip(result.images, names)):
        q, t = world_to_camera_qt(im.cam2world)
        pose = " ".join(repr(float(v)) for v in (*q, *t))
        lines += [f"{k + 1} {pose} {k + 1} {name}", ""]
    (directory / "images.txt").write_text("\n".join(lines) + "\n")

    header = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(points.xyz)}, mean track length: 0",
    ]
    xyz = points.xyz.astype(np.float64)
    rows = [
        f"{i + 1} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} 0"
        for i, (p, c) in enumerate(zip(xyz.tolist(), points.rgb.tolist()))
    ]
    (directory / "points3D.txt").write_text("\n".join(header + rows) + "\n")


def _write_binary(directory: Path, result: SceneResult, names: list[str], points: PointSet) -> None:
    cameras = np.zeros(len(result.images), _CAMERA_DTYPE)
    for k, im in enumerate(result.images):
        cameras[k] = (k + 1, PINHOLE_MODEL_ID, *im.photo_size, pinhole_params_corner(im.K_photo))
    with open(directory / "cameras.bin", "wb") as f:
        f.write(np.uint64(len(cameras)).tobytes())
        f.write(cameras.tobytes())

    with open(directory / "images.bin", "wb") as f:
        f.write(np.uint64(len(result.images)).tobytes())
        for k, (im, name) in enumerate(zip(result.images, names)):
            q, t = world_to_camera_qt(im.cam2world)
            f.write(np.int32(k + 1).tobytes())
            f.write(np.concatenate([q, t]).astype("<f8").tobytes())
            f.write(np.int32(k + 1).tobytes())
            f.write(name.encode("utf-8") + b"\0")
            f.write(np.uint64(0).tobytes())  # no 2D observations

    table = np.zeros(len(points.xyz), _POINT_DTYPE)
    table["id"] = np.arange(1, len(table) + 1)
    table["xyz"] = points.xyz
    table["rgb"] = points.rgb
    with open(directory / "points3D.bin", "wb") as f:
        f.write(np.uint64(len(table)).tobytes())
        f.write(table.tobytes())


def write_colmap_model(
    result: SceneResult,
    directory: str | Path,
    binary: bool = True,
    use_sparse: bool = False,
    conf_threshold: float | None = None,
    max_points: int = 500_000,
    seed: int = 0,
) -> Path:
    """Write ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``) into ``directory``.

    Args:
        result: the scene (cameras must be rigid poses, as every result holds).
        directory: output folder (created), e.g. ``<project>/sparse/0``.
        binary: write the ``.bin`` files, else the ``.txt`` files.
        use_sparse: write the result's sparse (SfM) points instead of the dense confident ones.
        conf_threshold: dense points with ``conf`` above it; None: ``result.conf_threshold``.
        max_points: at most this many dense points (fixed-seed sample); ``<= 0``: all.
        seed: sampling seed.

    Returns:
        ``directory`` as a Path.

    Raises:
        InputError: two photos share a file name (COLMAP matches images by name).
    """
    directory = Path(directory)
    names = _image_names(result.images)
    points = _model_points(result, use_sparse, conf_threshold, max_points, seed)
    directory.mkdir(parents=True, exist_ok=True)
    (_write_binary if binary else _write_text)(directory, result, names, points)
    log.info("Wrote COLMAP model: %d images, %d points, %s", len(names), len(points.xyz), directory)
    sideways = sideways_photos(result)
    if sideways:
        log.warning(
            "%d photo(s) are stored sideways (EXIF orientation); give tools that ignore it the "
            "upright copies under the photos' names: %s", len(sideways),
            "; ".join(f"{name} ({copy})" for name, copy in sideways),
        )
    return directory


def sideways_photos(result: SceneResult) -> list[tuple[str, str]]:
    """``(name in the model, upright copy)`` of the photos the model names but whose stored
    pixels are not what its cameras describe (EXIF-rotated or HEIC: see ``display_file``);
    tools that ignore EXIF orientation need the copies under those names."""
    return [(name, im.display_file) for name, im in zip(_image_names(result.images), result.images)
            if im.display_file]

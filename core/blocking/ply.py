"""Write point clouds as binary little-endian PLY (x y z, optional nx ny nz, red green blue)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..result import SceneResult
from .points import confident_points, sparse_points

log = logging.getLogger(__name__)


def write_ply(
    path: str | Path, xyz: np.ndarray, rgb: np.ndarray, normals: np.ndarray | None = None
) -> Path:
    """Write a binary little-endian PLY point cloud.

    Args:
        path: output file.
        xyz: ``(N, 3)`` float positions (written as float32).
        rgb: ``(N, 3)`` uint8 colours.
        normals: ``(N, 3)`` float unit normals or None; unknown (NaN) normals are written as 0.

    Raises:
        InputError: the arrays do not have matching ``(N, 3)`` shapes.
    """
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise InputError(
            f"PLY export needs (N, 3) points and colours, not {xyz.shape} and {rgb.shape}."
        )
    if normals is not None and np.shape(normals) != xyz.shape:
        raise InputError(
            f"PLY export: normals {np.shape(normals)} do not match points {xyz.shape}."
        )
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(xyz), np.dtype(fields))
    for axis, name in enumerate("xyz"):
        vertices[name] = xyz[:, axis]
    if normals is not None:
        finite = np.nan_to_num(np.asarray(normals, np.float32), nan=0.0)
        for axis, name in enumerate(("nx", "ny", "nz")):
            vertices[name] = finite[:, axis]
    for axis, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[:, axis]
    ply_types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}"]
    header += [f"property {ply_types[kind]} {name}" for name, kind in fields]
    header.append("end_header")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vertices.tobytes())
    return path


def export_ply(
    result: SceneResult,
    path: str | Path,
    use_sparse: bool = False,
    with_normals: bool = True,
    conf_threshold: float | None = None,
    max_points: int = 0,
    seed: int = 0,
) -> Path:
    """Write a result's confident dense points (colours, normals from the pointmaps) or its sparse
    points (colours only) as a PLY file.

    Args:
        result: the scene.
        path: output ``.ply`` file.
        use_sparse: write the sparse (SfM) points instead of the dense ones.
        with_normals: include normals for dense points.
        conf_threshold: dense points with ``conf`` above it; None: ``result.conf_threshold``.
        max_points: at most this many dense points (fixed-seed sample); ``<= 0``: all.
        seed: sampling seed.

    Raises:
        InputError: ``use_sparse`` but the result has no sparse points.
    """
    if use_sparse:
        points = sparse_points(result)
        if points is None:
            raise InputError("This result has no sparse points; export the dense points instead.")
    else:
        points = confident_points(result, conf_threshold, max_points, with_normals, seed)
    log.info("Writing %d points to %s", len(points.xyz), path)
    return write_ply(path, points.xyz, points.rgb, points.normals)

"""The confident points of a result, with colours and normals, as flat arrays for exports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..masks import limit_points, valid_mask
from ..result import SceneResult


@dataclass
class PointSet:
    """Flat point cloud.

    Attributes:
        xyz: ``(N, 3)`` float32 world points.
        rgb: ``(N, 3)`` uint8 colours.
        normals: ``(N, 3)`` float32 unit normals facing the camera that saw the point, or None.
        image_index: ``(N,)`` int32 index of the image each point comes from (-1 for sparse points).
    """

    xyz: np.ndarray
    rgb: np.ndarray
    normals: np.ndarray | None
    image_index: np.ndarray


def pointmap_normals(pts3d_world: np.ndarray, cam_center: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 unit normals of a pointmap, turned towards the camera.

    The normal of pixel ``(v, u)`` is the cross product of the pointmap's derivatives along the
    grid: central differences, or one-sided ones at the edge of a hole or of the grid (dense
    stereo leaves many holes); NaN where a pixel has no known neighbour along a grid axis or the
    surface is degenerate.

    Args:
        pts3d_world: ``(H, W, 3)`` float world points (NaN where unknown).
        cam_center: ``(3,)`` camera centre in the same world.
    """
    p = np.asarray(pts3d_world, np.float64)
    d_v, d_u = _grid_derivative(p, axis=0), _grid_derivative(p, axis=1)
    n = np.cross(d_u, d_v)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(length > 0, n / length, np.nan)
    # Face the camera: the normal and the direction to the camera make an acute angle.
    facing = np.einsum("hwc,hwc->hw", n, np.asarray(cam_center, np.float64) - p)
    n = np.where((facing < 0)[..., None], -n, n)
    return n.astype(np.float32)


def _grid_derivative(p: np.ndarray, axis: int) -> np.ndarray:
    """``(H, W, 3)`` derivative of a pointmap along grid ``axis``, per pixel step: central where
    both neighbours are known, else the one-sided difference to the known one, else NaN."""
    forward = np.full_like(p, np.nan)
    backward = np.full_like(p, np.nan)
    ahead = [slice(None)] * 3
    behind = [slice(None)] * 3
    ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
    forward[tuple(behind)] = p[tuple(ahead)] - p[tuple(behind)]  # p[i+1] - p[i] at i
    backward[tuple(ahead)] = forward[tuple(behind)]  # p[i] - p[i-1] at i
    central = 0.5 * (forward + backward)
    known = np.isfinite(central).all(-1, keepdims=True)
    one_sided = np.where(np.isfinite(forward).all(-1, keepdims=True), forward, backward)
    return np.where(known, central, one_sided)


def confident_points(
    result: SceneResult,
    conf_threshold: float | None = None,
    max_points: int = 0,
    with_normals: bool = True,
    seed: int = 0,
) -> PointSet:
    """All confident dense points of a result, optionally subsampled.

    Args:
        result: the scene.
        conf_threshold: keep ``conf > conf_threshold``; None uses ``result.conf_threshold``.
        max_points: keep at most this many (a fixed-seed uniform sample); ``<= 0`` keeps all.
        with_normals: estimate normals from each pointmap (points whose normal is unknown keep a
            NaN normal).
        seed: sampling seed.
    """
    threshold = result.conf_threshold if conf_threshold is None else conf_threshold
    xyz, rgb, normals, index = [], [], [], []
    for k, im in enumerate(result.images):
        mask = valid_mask(im.pts3d_world, im.conf, threshold)
        xyz.append(im.pts3d_world[mask])
        rgb.append(im.colors[mask])
        if with_normals:
            normals.append(pointmap_normals(im.pts3d_world, im.cam2world[:3, 3])[mask])
        index.append(np.full(int(mask.sum()), k, np.int32))
    points = PointSet(
        xyz=np.concatenate(xyz).astype(np.float32) if xyz else np.zeros((0, 3), np.float32),
        rgb=np.concatenate(rgb).astype(np.uint8) if rgb else np.zeros((0, 3), np.uint8),
        normals=np.concatenate(normals) if with_normals and normals else None,
        image_index=np.concatenate(index) if index else np.zeros(0, np.int32),
    )
    keep = limit_points(len(points.xyz), max_points, seed)
    if keep is None:
        return points
    return PointSet(
        xyz=points.xyz[keep],
        rgb=points.rgb[keep],
        normals=None if points.normals is None else points.normals[keep],
        image_index=points.image_index[keep],
    )


def sparse_points(result: SceneResult) -> PointSet | None:
    """The result's sparse (SfM) points as a :class:`PointSet`, or None if it has none."""
    if result.sparse_points is None:
        return None
    xyz = np.asarray(result.sparse_points, np.float32)
    rgb = result.sparse_colors
    if rgb is None:
        rgb = np.full((len(xyz), 3), 200, np.uint8)
    return PointSet(
        xyz=xyz,
        rgb=np.asarray(rgb, np.uint8),
        normals=None,
        image_index=np.full(len(xyz), -1, np.int32),
    )

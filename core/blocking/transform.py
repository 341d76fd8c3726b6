"""Apply a similarity transform (rotation, uniform scale, translation) to a whole result."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InputError
from ..result import ImageResult, SceneResult


def similarity_scale(world_from_world: np.ndarray) -> float:
    """The uniform scale of a ``(4, 4)`` similarity ``[s R | t]``.

    Raises:
        InputError: the matrix is not a similarity (shear, non-uniform scale, reflection, or a
            projective last row).
    """
    T = np.asarray(world_from_world, np.float64)
    if T.shape != (4, 4) or not np.allclose(T[3], [0, 0, 0, 1]):
        raise InputError("A scene transform must be a 4x4 affine matrix with last row 0 0 0 1.")
    A = T[:3, :3]
    scale = float(np.cbrt(np.linalg.det(A)))
    if not scale > 0 or not np.allclose(A.T @ A, scale**2 * np.eye(3), rtol=1e-6, atol=1e-9):
        raise InputError(
            "A scene transform must be a rotation with a uniform positive scale and a translation."
        )
    return scale


def _transform_points(world_from_world: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``(..., 3)`` points through a 4x4 affine, computed in float64, returned as float32."""
    p = np.asarray(pts, np.float64)
    out = p @ world_from_world[:3, :3].T + world_from_world[:3, 3]
    return out.astype(np.float32)


def apply_similarity(result: SceneResult, world_from_world: np.ndarray) -> SceneResult:
    """A copy of ``result`` with everything moved by the similarity ``world_from_world``.

    Dense and sparse points are transformed; each ``cam2world`` becomes
    ``world_from_world @ cam2world`` with the scale taken out of its rotation (so it stays a rigid
    pose whose centre moved with the points); depths are multiplied by the scale. Intrinsics,
    colours and confidences are unchanged; ``result`` itself is not modified.

    Args:
        result: the scene.
        world_from_world: ``(4, 4)`` float similarity ``[s R | t]``, old to new world coordinates.

    Raises:
        InputError: ``world_from_world`` is not a similarity.
    """
    T = np.asarray(world_from_world, np.float64)
    scale = similarity_scale(T)
    images: list[ImageResult] = []
    for im in result.images:
        cam2world = T @ np.asarray(im.cam2world, np.float64)
        cam2world[:3, :3] /= scale
        images.append(
            dataclasses.replace(
                im,
                cam2world=cam2world,
                pts3d_world=_transform_points(T, im.pts3d_world),
                depth=None if im.depth is None else (im.depth * np.float32(scale)),
            )
        )
    sparse = None if result.sparse_points is None else _transform_points(T, result.sparse_points)
    return dataclasses.replace(result, images=images, sparse_points=sparse)

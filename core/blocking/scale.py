"""Real-world scale: a factor from one known measurement, applied to the whole scene at once."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InputError
from ..result import SceneResult
from .level import Plane, find_floor
from .transform import apply_similarity


def _factor(measured: float, true_value: float, what: str) -> float:
    if not np.isfinite(true_value) or true_value <= 0:
        raise InputError(f"The known {what} must be a positive number, not {true_value}.")
    if not np.isfinite(measured) or measured <= 1e-12:
        raise InputError(
            f"The {what} measured in the scene is zero or unknown; pick two distinct points."
        )
    return float(true_value / measured)


def scale_from_distance(point_a: np.ndarray, point_b: np.ndarray, true_distance: float) -> float:
    """Factor that makes the distance between two scene points ``true_distance``.

    Raises:
        InputError: the points coincide or the distance is not positive.
    """
    offset = np.asarray(point_a, np.float64) - np.asarray(point_b, np.float64)
    measured = float(np.linalg.norm(offset))
    return _factor(measured, true_distance, "distance")


def scale_from_cameras(
    result: SceneResult, index_a: int, index_b: int, true_distance: float
) -> float:
    """Factor that makes the distance between the centres of two cameras ``true_distance``.

    Raises:
        InputError: an index is out of range, or the centres coincide.
    """
    n = len(result.images)
    if not (0 <= index_a < n and 0 <= index_b < n) or index_a == index_b:
        raise InputError(f"Pick two different cameras among the {n} of the scene.")
    centre_a = np.asarray(result.images[index_a].cam2world, np.float64)[:3, 3]
    centre_b = np.asarray(result.images[index_b].cam2world, np.float64)[:3, 3]
    return scale_from_distance(centre_a, centre_b, true_distance)


def scale_from_camera_height(
    result: SceneResult, index: int, true_height: float, floor: Plane | None = None
) -> float:
    """Factor that puts camera ``index`` ``true_height`` above the floor.

    Args:
        result: the scene.
        index: the camera.
        true_height: its known height above the floor (the new units).
        floor: the floor plane; None finds it with :func:`~.level.find_floor`.

    Raises:
        InputError: bad index, no floor, or the camera is not above the floor.
    """
    if not 0 <= index < len(result.images):
        raise InputError(f"Camera {index} does not exist; the scene has {len(result.images)}.")
    floor = find_floor(result) if floor is None else floor
    centre = np.asarray(result.images[index].cam2world, np.float64)[:3, 3]
    return _factor(float(floor.height(centre)), true_height, "camera height")


def apply_scale(result: SceneResult, factor: float, units: str = "m") -> SceneResult:
    """A copy of ``result`` scaled by ``factor`` about the world origin, in ``units``.

    Points, cameras (centres; rotations stay rigid), depths and sparse points all scale together;
    a levelled floor stays at z=0.

    Raises:
        InputError: ``factor`` is not a positive finite number.
    """
    if not np.isfinite(factor) or factor <= 0:
        raise InputError(f"The scale factor must be a positive number, not {factor}.")
    scaled = apply_similarity(result, np.diag([factor, factor, factor, 1.0]))
    return dataclasses.replace(scaled, units=units)

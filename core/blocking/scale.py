"""Real-world scale: a factor from one known measurement, applied to the whole scene at once."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InputError
from ..result import SceneResult
from .level import Plane, find_floor
from .transform import apply_similarity


_FACTOR_RANGE = (1e-9, 1e9)
"""Scale factors outside this range are typos: no real unit change needs them."""

# Two cameras closer than this share of the median distance between cameras (e.g. two photos
# from the same spot) cannot set the scale: their small distance is mostly pose noise.
_MIN_CAMERA_BASELINE = 0.02


def _factor(measured: float, true_value: float, what: str) -> float:
    if not np.isfinite(true_value) or true_value <= 0:
        raise InputError(f"The known {what} must be a positive number, not {true_value}.")
    if not np.isfinite(measured) or measured <= 1e-12:
        raise InputError(
            f"The {what} measured in the scene is zero or unknown; pick two distinct points."
        )
    factor = float(true_value / measured)
    if not _FACTOR_RANGE[0] <= factor <= _FACTOR_RANGE[1]:
        # A typo (or Blender's clamping of "inf" to the largest float) would overflow the
        # float32 points to inf and wreck the saved result.
        raise InputError(
            f"The known {what} {true_value:g} against {measured:g} measured would scale the scene "
            f"by {factor:.3g}; check the known {what} and the picked points."
        )
    return factor


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
        InputError: an index is out of range, or the centres are (nearly) the same place.
    """
    n = len(result.images)
    if not (0 <= index_a < n and 0 <= index_b < n) or index_a == index_b:
        raise InputError(f"Pick two different cameras among the {n} of the scene.")
    centres = np.array([np.asarray(im.cam2world, np.float64)[:3, 3] for im in result.images])
    measured = float(np.linalg.norm(centres[index_a] - centres[index_b]))
    i, j = np.triu_indices(n, 1)
    typical = float(np.median(np.linalg.norm(centres[i] - centres[j], axis=1)))
    if measured < _MIN_CAMERA_BASELINE * typical:
        raise InputError(
            f"Cameras {index_a + 1} and {index_b + 1} are only {measured:.3g} apart, against "
            f"{typical:.3g} between the scene's cameras typically (photos from about the same "
            "spot): their distance cannot set the scale. Pick two cameras further apart."
        )
    return _factor(measured, true_distance, "distance")


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

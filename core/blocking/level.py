"""Level a scene: find the floor robustly and make it the XY plane with +Z up.

The floor is found by sequential RANSAC (MSAC scoring) on the confident points: planes are
detected one after another (each removing its inliers), each refined by least squares on its
inliers. An up direction picks the floor among them: a floor is roughly perpendicular to it, and
nearly all cameras stand above it (which rules out a ceiling, and walls the cameras surround);
of those, the one with most support wins (a table top is smaller than the floor around it).

The up direction is the cameras' average up (the -y axis of OpenCV cameras, in the world) when
they agree. Photos turned by different amounts (a gantry's upside-down views, a mix of camera
rolls) make that average meaningless; when the cameras then stand on one level ring or arc (an
orbit, a turntable shoot), the normal of the plane through them is up, its sign given by the
cameras being above the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..result import SceneResult
from .points import confident_points
from .transform import apply_similarity


@dataclass(frozen=True)
class Plane:
    """A plane ``normal . x + offset = 0``; ``height(x) = normal . x + offset``.

    Attributes:
        normal: ``(3,)`` float64 unit normal (for a floor: pointing up, towards the cameras).
        offset: signed offset in world units.
        inliers: number of points within the inlier threshold.
    """

    normal: np.ndarray
    offset: float
    inliers: int

    def height(self, pts: np.ndarray) -> np.ndarray:
        """``(...)`` float64 signed distance of ``(..., 3)`` points above the plane."""
        return np.asarray(pts, np.float64) @ self.normal + self.offset

    def project(self, pts: np.ndarray) -> np.ndarray:
        """``(..., 3)`` float64 feet of the perpendiculars from the points onto the plane."""
        pts = np.asarray(pts, np.float64)
        return pts - self.height(pts)[..., None] * self.normal


# Mean length of the cameras' unit up vectors above which their average is trusted (1: all
# agree; 0.7: within about 45 degrees of each other).
_AGREEING_UPS = 0.7
# Camera centres "on one level ring" when their spread across the best plane is below this share
# of their spread along it (the smallest singular value against the middle one).
_FLAT_RING = 0.15
# Share of the cameras that must stand above a floor.
_CAMERAS_ABOVE = 0.8


def up_direction(result: SceneResult) -> tuple[np.ndarray, bool]:
    """``((3,) float64 unit up estimate, whether its sign is known)``; see the module docstring.

    Raises:
        InputError: the cameras disagree on up and do not stand on one level ring.
    """
    ups = np.array([-np.asarray(im.cam2world, np.float64)[:3, 1] for im in result.images])
    mean = ups.mean(axis=0)
    if np.linalg.norm(mean) >= _AGREEING_UPS:
        return mean / np.linalg.norm(mean), True
    centres = np.array([np.asarray(im.cam2world, np.float64)[:3, 3] for im in result.images])
    if len(centres) >= 3:
        _, spread, vt = np.linalg.svd(centres - centres.mean(axis=0), full_matrices=False)
        if spread[1] > 0 and spread[2] < _FLAT_RING * spread[1]:
            return vt[2], False
    raise InputError(
        "The photos are turned by different amounts, so their cameras disagree on which way is "
        "up, and the cameras do not stand on one level ring either: the floor cannot be told "
        "apart from the walls. Set the orientation by hand (rotate the reconstruction's "
        "collection)."
    )


def fit_plane(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane through ``(N, 3)`` points: ``(unit normal (3,), offset)``, float64."""
    pts = np.asarray(pts, np.float64)
    centroid = pts.mean(axis=0)
    # The normal is the direction of least spread: the last right singular vector.
    _, _, vt = np.linalg.svd(pts - centroid, full_matrices=False)
    normal = vt[-1]
    return normal, float(-normal @ centroid)


def _ransac_plane(
    pts: np.ndarray,
    up: np.ndarray,
    threshold: float,
    min_cos_tilt: float,
    iterations: int,
    rng: np.random.Generator,
    max_score_points: int = 5000,
) -> tuple[np.ndarray, float] | None:
    """Best plane hypothesis within the tilt limit, refined; None if no sample fits."""
    score_pts = pts
    if len(pts) > max_score_points:
        score_pts = pts[rng.choice(len(pts), max_score_points, replace=False)]
    samples = pts[rng.integers(0, len(pts), (iterations, 3))]
    normals = np.cross(samples[:, 1] - samples[:, 0], samples[:, 2] - samples[:, 0])
    length = np.linalg.norm(normals, axis=1)
    ok = length > 0
    normals = normals[ok] / length[ok, None]
    # Only planes roughly perpendicular to the up direction can be the floor.
    tilt_ok = np.abs(normals @ up) >= min_cos_tilt
    normals, anchors = normals[tilt_ok], samples[ok][tilt_ok, 0]
    if len(normals) == 0:
        return None
    offsets = -np.einsum("kc,kc->k", normals, anchors)
    # MSAC score (truncated squared distance): among planes with similar support it prefers the
    # one that fits its points tightly, not one that trades part of a surface for a strip of a wall.
    cost = np.minimum((score_pts @ normals.T + offsets) ** 2, threshold**2).sum(axis=0)
    best = int(np.argmin(cost))
    normal, offset = normals[best], float(offsets[best])
    # Least squares on the inliers, repeated with a band of 3 robust sigmas of the residuals
    # (between a tenth of the threshold and the threshold): stray points inside the threshold
    # slab far from the surface would otherwise tilt a small plane.
    band = threshold
    for _ in range(3):
        inliers = pts[np.abs(pts @ normal + offset) < band]
        if len(inliers) < 3:
            return None
        normal, offset = fit_plane(inliers)
        robust_sigma = 1.4826 * float(np.median(np.abs(inliers @ normal + offset)))
        band = min(threshold, max(0.1 * threshold, 3.0 * robust_sigma))
    return normal, offset


def detect_planes(
    pts: np.ndarray,
    up: np.ndarray,
    threshold: float,
    max_tilt_deg: float = 45.0,
    max_planes: int = 4,
    min_inliers: int = 50,
    iterations: int = 400,
    seed: int = 0,
) -> list[Plane]:
    """Planes roughly perpendicular to ``up``, found one after another by RANSAC.

    Args:
        pts: ``(N, 3)`` float points.
        up: ``(3,)`` unit up direction; normals are returned pointing along it.
        threshold: inlier distance in world units.
        max_tilt_deg: largest angle between a plane's normal and ``up``.
        max_planes: most planes to detect.
        min_inliers: smallest support for a plane.
        iterations: RANSAC hypotheses per plane.
        seed: random seed (results are reproducible).

    Returns:
        Planes within the tilt limit in the order found (decreasing support), each with its
        inlier count.
    """
    rng = np.random.default_rng(seed)
    remaining = np.asarray(pts, np.float64)
    min_cos_tilt = float(np.cos(np.radians(max_tilt_deg)))
    planes: list[Plane] = []
    while len(planes) < max_planes and len(remaining) >= max(min_inliers, 3):
        found = _ransac_plane(remaining, up, threshold, min_cos_tilt, iterations, rng)
        if found is None:
            break
        normal, offset = found
        inliers = np.abs(remaining @ normal + offset) < threshold
        if inliers.sum() < min_inliers:
            break
        # A strip of a wall can pass as a tilted plane until least squares turns it upright:
        # such a plane's points are removed but it is not a candidate.
        if abs(normal @ up) >= min_cos_tilt:
            sign = 1.0 if normal @ up >= 0 else -1.0
            planes.append(Plane(sign * normal, sign * offset, int(inliers.sum())))
        remaining = remaining[~inliers]
    return planes


def _default_threshold(pts: np.ndarray) -> float:
    """1% of the robust extent of the points (5th to 95th percentile box diagonal)."""
    lo, hi = np.percentile(pts, [5, 95], axis=0)
    return 0.01 * float(np.linalg.norm(hi - lo))


def find_floor(
    result: SceneResult,
    conf_threshold: float | None = None,
    inlier_threshold: float | None = None,
    max_tilt_deg: float = 45.0,
    max_points: int = 100_000,
    seed: int = 0,
) -> Plane:
    """The dominant ground plane of a scene, its normal pointing up.

    Args:
        result: the scene.
        conf_threshold: points with ``conf`` above it are used; None: ``result.conf_threshold``.
        inlier_threshold: plane inlier distance in world units; None: 1% of the scene extent.
        max_tilt_deg: largest angle between the floor normal and the up direction
            (:func:`up_direction`).
        max_points: points used (a fixed-seed sample of the confident points).
        seed: random seed.

    Raises:
        InputError: too few points, or no plane below the cameras roughly perpendicular to up.
    """
    pts = confident_points(result, conf_threshold, max_points, with_normals=False, seed=seed).xyz
    if len(pts) < 3:
        raise InputError(
            "Too few confident points to find the floor; lower the confidence threshold."
        )
    pts = pts.astype(np.float64)
    up, sign_known = up_direction(result)
    threshold = _default_threshold(pts) if inlier_threshold is None else inlier_threshold
    centres = np.array([np.asarray(im.cam2world, np.float64)[:3, 3] for im in result.images])
    # A floor must hold a few percent of the points, so slabs of scattered outliers do not count.
    min_inliers = max(50, int(0.02 * len(pts)))
    planes = detect_planes(pts, up, threshold, max_tilt_deg, min_inliers=min_inliers, seed=seed)
    if not sign_known:  # up from the ring of cameras: the floor's normal points to the cameras
        planes = [_facing_cameras(plane, centres) for plane in planes]
    # (Nearly) all cameras above it: a floor, not a ceiling, nor a plane through the scene.
    candidates = [p for p in planes if np.mean(p.height(centres) > 0) >= _CAMERAS_ABOVE]
    if not candidates:
        raise InputError(
            "No floor found: no large plane lies below the cameras and faces their up direction. "
            "Pick the origin and scale by hand, or raise the tilt limit."
        )
    return max(candidates, key=lambda plane: plane.inliers)


def _facing_cameras(plane: Plane, centres: np.ndarray) -> Plane:
    """``plane`` with its normal turned towards most of the camera ``centres``."""
    if np.median(plane.height(centres)) >= 0:
        return plane
    return Plane(-plane.normal, -plane.offset, plane.inliers)


def floor_transform(
    floor: Plane, cam2world_first: np.ndarray, origin: np.ndarray | None = None
) -> np.ndarray:
    """``(4, 4)`` float64 rigid transform putting ``floor`` on z=0 with +Z up.

    The new origin is ``origin`` projected onto the floor, or the floor point under the first
    camera. The first camera's viewing direction, projected on the floor, becomes +Y (Blender's
    "front" direction), so the scene faces the way the first photo was taken.

    Args:
        floor: the floor plane, normal pointing up.
        cam2world_first: ``(4, 4)`` pose of the first camera (OpenCV axes).
        origin: ``(3,)`` world point for the new origin, or None.
    """
    c2w = np.asarray(cam2world_first, np.float64)
    z_axis = floor.normal / np.linalg.norm(floor.normal)
    # Viewing direction in the floor plane; a camera looking straight down uses its image "up".
    for direction in (c2w[:3, 2], -c2w[:3, 1]):
        forward = direction - (direction @ z_axis) * z_axis
        if np.linalg.norm(forward) > 1e-3:
            break
    y_axis = forward / np.linalg.norm(forward)
    x_axis = np.cross(y_axis, z_axis)
    point = floor.project(c2w[:3, 3] if origin is None else origin)
    new_from_world = np.eye(4)
    new_from_world[:3, :3] = np.stack([x_axis, y_axis, z_axis])
    new_from_world[:3, 3] = -new_from_world[:3, :3] @ point
    return new_from_world


def level_scene(
    result: SceneResult, origin: np.ndarray | None = None, **floor_options
) -> tuple[SceneResult, np.ndarray, Plane]:
    """Find the floor and move the whole scene so the floor is z=0 with +Z up.

    Args:
        result: the scene.
        origin: ``(3,)`` world point (e.g. picked by the user) to become the origin after it is
            projected onto the floor; None: the floor under the first camera.
        **floor_options: passed to :func:`find_floor`.

    Returns:
        ``(levelled result, (4, 4) new_from_world transform applied, floor in the old world)``.
    """
    floor = find_floor(result, **floor_options)
    new_from_world = floor_transform(floor, result.images[0].cam2world, origin)
    return apply_similarity(result, new_from_world), new_from_world, floor

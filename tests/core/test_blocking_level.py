"""Levelling and scaling on a scene with known truth.

The truth frame has the floor at z=0, +Z up and metres as units. It holds a noisy floor, a smaller
table top, a wall, a ceiling, random outliers, and cameras 1.5 m above the floor looking slightly
down. The scene handed to the code is the truth moved by a random similarity (tilted, offset and
scaled), as a reconstruction would be.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.blocking.level import find_floor, level_scene, up_direction
from core.blocking.scale import (
    apply_scale,
    scale_from_camera_height,
    scale_from_cameras,
    scale_from_distance,
)
from core.blocking.transform import apply_similarity
from core.errors import InputError
from core.result import ImageResult, SceneResult
from core.synthetic import look_at_cam2world

GRID_H, GRID_W = 48, 64
CAMERA_HEIGHT = 1.5


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# Share of the points on each surface. The ceiling has more support than the table, so the
# camera-side rule, not the size, must reject it when the floor is absent.
SURFACES = {"floor": 0.35, "ceiling": 0.22, "wall": 0.17, "table": 0.16, "outliers": 0.10}


def _surface(rng: np.random.Generator, name: str, n: int) -> np.ndarray:
    lo, hi = {
        "floor": ([-4.0, -4.0, 0.0], [4.0, 4.0, 0.0]),
        "ceiling": ([-4.0, -4.0, 2.5], [4.0, 4.0, 2.5]),
        "wall": ([-4.0, 4.0, 0.0], [4.0, 4.0, 2.5]),
        "table": ([-2.5, -2.5, 0.75], [-0.5, -0.5, 0.75]),
        "outliers": ([-4.0, -4.0, -0.5], [4.0, 4.0, 3.0]),
    }[name]
    pts = rng.uniform(lo, hi, size=(n, 3))
    if name != "outliers":  # 1 cm of noise across each surface
        axis = 1 if name == "wall" else 2
        pts[:, axis] += rng.normal(0.0, 0.01, n)
    return pts


def _truth_points(rng: np.random.Generator, n_total: int, surfaces: dict[str, float]) -> np.ndarray:
    """``(n_total, 3)`` truth-frame points on the given surfaces, in proportion, shuffled."""
    total = sum(surfaces.values())
    counts = {name: int(n_total * share / total) for name, share in surfaces.items()}
    first = next(iter(counts))
    counts[first] += n_total - sum(counts.values())
    pts = np.concatenate([_surface(rng, name, n) for name, n in counts.items()])
    rng.shuffle(pts)
    return pts


def make_scene(seed: int = 0, surfaces: dict[str, float] = SURFACES):
    """``(SceneResult in a random world, world_from_truth similarity, truth points, truth c2w)``."""
    rng = np.random.default_rng(seed)
    n_images = 4
    centres = [
        np.array([3.0 * np.cos(a), 3.0 * np.sin(a), CAMERA_HEIGHT])
        for a in np.linspace(0.3, 2.0 * np.pi + 0.3, n_images, endpoint=False)
    ]
    c2w_truth = [look_at_cam2world(c, np.array([0.0, 0.0, 0.3]), roll=rng.uniform(-0.1, 0.1)) for c in centres]
    pts_truth = _truth_points(rng, n_images * GRID_H * GRID_W, surfaces)

    world_from_truth = np.eye(4)
    scale = 0.37
    world_from_truth[:3, :3] = scale * _random_rotation(rng)
    world_from_truth[:3, 3] = rng.normal(0.0, 5.0, 3)

    pts_world = pts_truth @ world_from_truth[:3, :3].T + world_from_truth[:3, 3]
    images = []
    for k in range(n_images):
        cam2world = world_from_truth @ c2w_truth[k]
        cam2world[:3, :3] /= scale
        grid = pts_world[k * GRID_H * GRID_W : (k + 1) * GRID_H * GRID_W].reshape(GRID_H, GRID_W, 3)
        world2cam = np.linalg.inv(cam2world)
        depth = (grid @ world2cam[:3, :3].T + world2cam[:3, 3])[..., 2]
        conf = np.full((GRID_H, GRID_W), 3.0, np.float32)
        conf[:2] = 0.5  # low-confidence rows: ignored
        images.append(
            ImageResult(
                file=f"photo{k}.jpg",
                photo_size=(640, 480),
                K=np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]]),
                cam2world=cam2world,
                photo_from_map=np.diag([10.0, 10.0, 1.0]),
                pts3d_world=grid.astype(np.float32),
                conf=conf,
                colors=rng.integers(0, 256, (GRID_H, GRID_W, 3), dtype=np.uint8),
                depth=depth.astype(np.float32),
            )
        )
    result = SceneResult(
        images=images, backend="synthetic", conf_kind="synthetic", conf_threshold=1.0
    )
    return result, world_from_truth, pts_truth, c2w_truth


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


@pytest.fixture(scope="module")
def scene():
    return make_scene()


def test_camera_up_is_truth_up(scene):
    result, world_from_truth, _, _ = scene
    true_up = world_from_truth[:3, :3] @ [0.0, 0.0, 1.0]
    # Cameras pitched down 16 degrees all round: their average up is the true up.
    up, sign_known = up_direction(result)
    assert sign_known and _angle_deg(up, true_up) < 2.0


def test_floor_found_among_table_wall_ceiling(scene):
    result, world_from_truth, _, _ = scene
    floor = find_floor(result)
    true_normal = world_from_truth[:3, :3] @ [0.0, 0.0, 1.0]
    assert _angle_deg(floor.normal, true_normal) < 1.0
    # The true floor's points lie on it, not the table (0.75 m up) or the ceiling.
    true_floor_point = world_from_truth[:3, :3] @ [1.0, -2.0, 0.0] + world_from_truth[:3, 3]
    assert abs(floor.height(true_floor_point)) < 0.02 * 0.37


@pytest.mark.parametrize("use_origin", [False, True])
def test_level_scene_puts_true_floor_on_z0(scene, use_origin: bool):
    result, world_from_truth, pts_truth, c2w_truth = scene
    picked_truth = np.array([0.5, 0.2, 0.9])  # a point above the floor, e.g. on an object
    origin = world_from_truth[:3, :3] @ picked_truth + world_from_truth[:3, 3]
    levelled, new_from_world, _ = level_scene(result, origin=origin if use_origin else None)
    new_from_truth = new_from_world @ world_from_truth
    scale = np.cbrt(np.linalg.det(new_from_truth[:3, :3]))

    # The true floor normal is +Z within 1 degree, and true floor points have z ~ 0.
    assert _angle_deg(new_from_truth[:3, :3] @ [0.0, 0.0, 1.0], np.array([0.0, 0.0, 1.0])) < 1.0
    floor_truth = np.array([[x, y, 0.0] for x in (-3.0, 0.0, 3.0) for y in (-3.0, 0.0, 3.0)])
    floor_new = floor_truth @ new_from_truth[:3, :3].T + new_from_truth[:3, 3]
    np.testing.assert_allclose(floor_new[:, 2], 0.0, atol=0.01 * scale)

    # Origin: under the first camera, or under the picked point.
    expected_origin_truth = picked_truth if use_origin else c2w_truth[0][:3, 3]
    origin_new = new_from_truth[:3, :3] @ expected_origin_truth + new_from_truth[:3, 3]
    np.testing.assert_allclose(origin_new[:2], 0.0, atol=0.02 * scale)

    # Cameras moved with the points: every depth is still the z of its point in its camera.
    for im, c2w_t in zip(levelled.images, c2w_truth):
        assert im.cam2world[2, 3] == pytest.approx(CAMERA_HEIGHT * scale, rel=0.01)
        rotation = im.cam2world[:3, :3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
        w2c = np.linalg.inv(im.cam2world)
        z_cam = (im.pts3d_world.astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3])[..., 2]
        np.testing.assert_allclose(im.depth, z_cam, rtol=1e-4, atol=1e-4 * scale)
        # Camera pose equals the truth pose moved by the same similarity.
        expected = new_from_truth @ c2w_t
        expected[:3, :3] /= scale
        np.testing.assert_allclose(im.cam2world, expected, atol=1e-9)
    # Input untouched.
    assert not np.allclose(result.images[0].cam2world, levelled.images[0].cam2world)


def test_scale_from_known_distance_gives_true_distances(scene):
    result, world_from_truth, pts_truth, c2w_truth = scene
    levelled, new_from_world, _ = level_scene(result)
    new_from_truth = new_from_world @ world_from_truth
    a_truth, b_truth = np.array([-3.0, 1.0, 0.0]), np.array([2.0, -1.5, 0.75])
    a, b = (new_from_truth[:3, :3] @ p + new_from_truth[:3, 3] for p in (a_truth, b_truth))
    factor = scale_from_distance(a, b, float(np.linalg.norm(a_truth - b_truth)))
    scaled = apply_scale(levelled, factor, units="m")
    assert scaled.units == "m"
    # Distances between true points (dense points and camera centres) come out in metres.
    rng = np.random.default_rng(1)
    idx = rng.integers(0, GRID_H * GRID_W, (200, 2))
    grid_truth = pts_truth[: GRID_H * GRID_W]
    grid_scaled = scaled.images[0].pts3d_world.reshape(-1, 3).astype(np.float64)
    d_true = np.linalg.norm(grid_truth[idx[:, 0]] - grid_truth[idx[:, 1]], axis=1)
    d_scaled = np.linalg.norm(grid_scaled[idx[:, 0]] - grid_scaled[idx[:, 1]], axis=1)
    keep = d_true > 0.1
    np.testing.assert_allclose(d_scaled[keep], d_true[keep], rtol=0.01)
    centre = [im.cam2world[:3, 3] for im in scaled.images]
    assert np.linalg.norm(centre[0] - centre[2]) == pytest.approx(
        np.linalg.norm(c2w_truth[0][:3, 3] - c2w_truth[2][:3, 3]), rel=0.01
    )
    # Heights above the levelled floor are metres too, and depth scaled with the points.
    assert scaled.images[1].cam2world[2, 3] == pytest.approx(CAMERA_HEIGHT, rel=0.01)
    np.testing.assert_allclose(scaled.images[0].depth, levelled.images[0].depth * factor, rtol=1e-6)


def test_scale_from_cameras_and_camera_height(scene):
    result, _, _, c2w_truth = scene
    true_d = float(np.linalg.norm(c2w_truth[1][:3, 3] - c2w_truth[3][:3, 3]))
    by_cameras = apply_scale(result, scale_from_cameras(result, 1, 3, true_d))
    by_height = apply_scale(result, scale_from_camera_height(result, 0, CAMERA_HEIGHT))
    for scaled in (by_cameras, by_height):
        c = [im.cam2world[:3, 3] for im in scaled.images]
        for i, j in [(0, 1), (0, 2), (2, 3)]:
            true_ij = np.linalg.norm(c2w_truth[i][:3, 3] - c2w_truth[j][:3, 3])
            assert np.linalg.norm(c[i] - c[j]) == pytest.approx(true_ij, rel=0.01)
    assert scale_from_camera_height(by_height, 2, CAMERA_HEIGHT) == pytest.approx(1.0, rel=0.01)


def test_bad_scale_inputs(scene):
    result = scene[0]
    with pytest.raises(InputError, match="positive"):
        scale_from_distance([0, 0, 0], [1, 0, 0], -2.0)
    with pytest.raises(InputError, match="distinct points"):
        scale_from_distance([1, 2, 3], [1, 2, 3], 2.0)
    with pytest.raises(InputError, match="two different cameras"):
        scale_from_cameras(result, 1, 1, 2.0)
    with pytest.raises(InputError, match=r"would scale the scene by 3\.4e\+38"):
        scale_from_distance([0, 0, 0], [1, 0, 0], 3.4e38)  # Blender's clamped "inf"
    # Two photos from about the same spot: their distance is pose noise, not a baseline.
    twin = dataclasses.replace(result.images[0], cam2world=result.images[0].cam2world.copy())
    twin.cam2world[0, 3] += 1e-4
    twins = dataclasses.replace(result, images=[*result.images, twin])
    with pytest.raises(InputError, match="Cameras 1 and 5 are only 0.0001 apart.*further apart"):
        scale_from_cameras(twins, 0, 4, 2.0)
    with pytest.raises(InputError, match="does not exist"):
        scale_from_camera_height(result, 9, 1.5)
    with pytest.raises(InputError, match="positive"):
        apply_scale(result, 0.0)
    with pytest.raises(InputError, match="uniform positive scale"):
        apply_similarity(result, np.diag([1.0, 2.0, 1.0, 1.0]))


def test_ceiling_is_not_taken_for_the_floor():
    """Without a floor, the ceiling has the most horizontal support but is above the cameras."""
    surfaces = {k: v for k, v in SURFACES.items() if k != "floor"}
    result, world_from_truth, _, _ = make_scene(seed=3, surfaces=surfaces)
    floor = find_floor(result)
    table_point = world_from_truth[:3, :3] @ [-1.5, -1.5, 0.75] + world_from_truth[:3, 3]
    assert abs(floor.height(table_point)) < 0.02 * 0.37
    assert _angle_deg(floor.normal, world_from_truth[:3, :3] @ [0.0, 0.0, 1.0]) < 1.0


def _turn_photos(result: SceneResult, turned: list[int], lift: float = 0.0) -> SceneResult:
    """The cameras ``turned`` rolled by 180 degrees about their optical axes (a gantry's
    upside-down views), each also raised by ``lift`` times its index (world units)."""
    images = []
    for k, im in enumerate(result.images):
        cam2world = im.cam2world.copy()
        if k in turned:
            cam2world[:3, :2] *= -1.0  # x and y axes flipped: the same view, upside down
        cam2world[:3, 3] += lift * k * cam2world[:3, 2]
        images.append(dataclasses.replace(im, cam2world=cam2world))
    return dataclasses.replace(result, images=images)


def test_upside_down_photos_on_a_ring_still_find_the_floor(scene):
    """Half the photos upside down: the cameras' up vectors cancel, but they stand on one level
    ring, whose normal is up. Levelling twice changes nothing the second time."""
    result, world_from_truth, _, _ = scene
    turned = _turn_photos(result, [1, 3])
    assert np.linalg.norm(np.mean([-im.cam2world[:3, 1] for im in turned.images], axis=0)) < 0.1
    up, sign_known = up_direction(turned)
    assert not sign_known
    true_up = world_from_truth[:3, :3] @ [0.0, 0.0, 1.0] / 0.37
    assert _angle_deg(up, true_up) < 1.0 or _angle_deg(-up, true_up) < 1.0

    levelled, new_from_world, floor = level_scene(turned)
    assert _angle_deg(floor.normal, true_up) < 1.0  # pointing up, towards the cameras
    np.testing.assert_allclose(
        [im.cam2world[2, 3] for im in levelled.images], CAMERA_HEIGHT * 0.37, rtol=0.02
    )
    again, new_from_levelled, _ = level_scene(levelled)
    # The same floor, refitted to float32 points: identity to about 1e-6.
    np.testing.assert_allclose(new_from_levelled, np.eye(4), atol=1e-5)


def test_cameras_that_disagree_on_up_off_a_ring_are_a_clear_error(scene):
    # Upside-down photos and cameras not on one level ring: no way to tell up.
    turned = _turn_photos(scene[0], [1, 3], lift=3.0)
    with pytest.raises(InputError, match="turned by different amounts.*not stand on one level"):
        level_scene(turned)


def test_no_floor_is_a_clear_error():
    result = make_scene(seed=4, surfaces={"wall": 1.0})[0]
    with pytest.raises(InputError, match="No floor found"):
        find_floor(result)


def _tartanair_scene(scene_dir: Path, step: int = 8) -> SceneResult:
    """A result made of the simulator's ground truth: metric z-depth and poses, every
    ``step``-th pixel. The world is TartanAir's NED frame, so the true up is -Z."""
    gt = json.loads((scene_dir / "gt.json").read_text())
    images = []
    for frame in gt["frames"]:
        depth_mm = np.asarray(Image.open(scene_dir / frame["depth"]), np.float64)
        depth = depth_mm[step // 2 :: step, step // 2 :: step] / 1000.0
        h, w = depth.shape
        # Intrinsics of the subsampled grid: pixel (u, v) is full-resolution pixel step*u+step/2.
        K = np.array(
            [
                [frame["fx"] / step, 0, (frame["cx"] - step // 2) / step],
                [0, frame["fy"] / step, (frame["cy"] - step // 2) / step],
                [0, 0, 1],
            ]
        )
        R_w2c, t_w2c = np.array(frame["R_w2c"]), np.array(frame["t_w2c"])
        cam2world = np.eye(4)
        cam2world[:3, :3] = R_w2c.T
        cam2world[:3, 3] = -R_w2c.T @ t_w2c
        u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
        rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
        pts = (rays * depth[..., None]) @ cam2world[:3, :3].T + cam2world[:3, 3]
        pts[depth == 0] = np.nan
        images.append(
            ImageResult(
                file=frame["file"],
                photo_size=(frame["width"], frame["height"]),
                K=K,
                cam2world=cam2world,
                photo_from_map=np.array([[step, 0, step // 2], [0, step, step // 2], [0, 0, 1.0]]),
                pts3d_world=pts.astype(np.float32),
                conf=(depth > 0).astype(np.float32),
                colors=np.zeros((h, w, 3), np.uint8),
                depth=depth.astype(np.float32),
            )
        )
    return SceneResult(images=images, backend="ground-truth", conf_threshold=0.5)


@pytest.mark.shared
def test_level_and_scale_real_indoor_scene(shared_dir: Path):
    """TartanAir indoor (simulator ground truth): the cameras' average up is far from gravity
    (a flying camera), yet the tiled floor is found; then metric scale from two cameras."""
    truth = _tartanair_scene(shared_dir / "scenes" / "tartanair_indoor_seq")
    true_up = np.array([0.0, 0.0, -1.0])
    up, sign_known = up_direction(truth)
    assert sign_known and _angle_deg(up, true_up) > 20.0

    rng = np.random.default_rng(7)
    world_from_truth = np.eye(4)
    world_from_truth[:3, :3] = 2.7 * _random_rotation(rng)
    world_from_truth[:3, 3] = rng.normal(0.0, 3.0, 3)
    result = apply_similarity(truth, world_from_truth)

    levelled, new_from_world, _ = level_scene(result)
    new_from_truth = new_from_world @ world_from_truth
    assert _angle_deg(new_from_truth[:3, :3] @ true_up, np.array([0.0, 0.0, 1.0])) < 1.0

    c_first, c_last = (truth.images[k].cam2world[:3, 3] for k in (0, -1))
    true_distance = float(np.linalg.norm(c_first - c_last))
    factor = scale_from_cameras(levelled, 0, len(levelled.images) - 1, true_distance)
    scaled = apply_scale(levelled, factor)
    # Metric: camera heights above the levelled floor equal the true heights above the floor
    # (true floor height measured from the ground truth: the lowest 1% of points).
    floor_z_truth = np.nanpercentile(
        np.concatenate([im.pts3d_world[..., 2].ravel() for im in truth.images]), 99.0
    )
    true_heights = np.array([floor_z_truth - im.cam2world[2, 3] for im in truth.images])
    heights = np.array([im.cam2world[2, 3] for im in scaled.images])
    np.testing.assert_allclose(heights, true_heights, rtol=0.01, atol=0.01)

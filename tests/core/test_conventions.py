"""OpenCV <-> Blender camera conventions: round trips, an independent frustum projection, and
Blender's own projection (``world_to_camera_view`` with the real bpy module)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.geometry.conventions import (
    BLENDER_FROM_OPENCV_CAM,
    blender_camera_params,
    cam2world_blender_to_opencv,
    cam2world_opencv_to_blender,
    intrinsics_from_blender_camera,
)

# (W, H, fx, fy, cx, cy): landscape, portrait, square, off-centre principal points, fx != fy both ways.
CAMERAS = [
    (640, 480, 500.0, 500.0, 319.5, 239.5),
    (480, 640, 520.0, 520.0, 200.25, 350.75),
    (512, 512, 400.0, 400.0, 255.5, 255.5),
    (640, 480, 600.0, 450.0, 300.0, 260.0),
    (300, 500, 350.0, 420.0, 160.0, 230.0),
    (500, 500, 450.0, 380.0, 240.0, 260.0),
]


def _K(fx, fy, cx, cy):
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def _random_pose(rng):
    a, b = rng.normal(size=3), rng.normal(size=3)
    x = a / np.linalg.norm(a)
    y = np.cross(x, b)
    y /= np.linalg.norm(y)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, np.cross(x, y)], axis=1)
    c2w[:3, 3] = rng.normal(size=3)
    return c2w


@pytest.mark.parametrize("cam", CAMERAS)
def test_intrinsics_round_trip(cam):
    W, H, fx, fy, cx, cy = cam
    K = _K(fx, fy, cx, cy)
    p = blender_camera_params(K, W, H, sensor_width=36.0)
    assert min(p["pixel_aspect_x"], p["pixel_aspect_y"]) == 1.0
    back = intrinsics_from_blender_camera(width=W, height=H, **p)
    np.testing.assert_allclose(back, K, rtol=0, atol=1e-9)


def test_centred_principal_point_means_zero_shift():
    p = blender_camera_params(_K(500, 500, 319.5, 239.5), 640, 480)
    assert p["shift_x"] == 0.0 and p["shift_y"] == 0.0
    assert p["lens"] == pytest.approx(500 * 36 / 640)


def test_auto_fit_reads_like_the_fit_we_choose():
    for W, H, fx, fy, cx, cy in CAMERAS:
        K = _K(fx, fy, cx, cy)
        p = dict(blender_camera_params(K, W, H), sensor_fit="AUTO")
        np.testing.assert_allclose(intrinsics_from_blender_camera(width=W, height=H, **p), K, atol=1e-9)


def test_pose_round_trip_and_axes():
    rng = np.random.default_rng(0)
    c2w = _random_pose(rng)
    mw = cam2world_opencv_to_blender(c2w)
    np.testing.assert_allclose(cam2world_blender_to_opencv(mw), c2w, atol=1e-12)
    # Blender cameras look down their local -z with y up: OpenCV +z (forward) is Blender -z.
    np.testing.assert_allclose(mw[:3, 2], -c2w[:3, 2], atol=1e-12)
    np.testing.assert_allclose(mw[:3, 1], -c2w[:3, 1], atol=1e-12)
    np.testing.assert_allclose(BLENDER_FROM_OPENCV_CAM @ BLENDER_FROM_OPENCV_CAM, np.eye(3))


def _project_via_frustum(params, W, H, matrix_world, X_world):
    """Independent float64 route: Blender's view plane at unit distance (as in
    ``Camera.view_frame``), then linear interpolation of the point between the frame edges."""
    ycor = params["pixel_aspect_y"] / params["pixel_aspect_x"]
    horizontal = params["sensor_fit"] == "HORIZONTAL"
    sensor = params["sensor_width"] if horizontal else params["sensor_height"]
    # Half-extents of the frame at distance 1, in Blender camera units.
    if horizontal:
        half_w = 0.5 * sensor / params["lens"]
        half_h = half_w * ycor * H / W
        scale = 2 * half_w
    else:
        half_h = 0.5 * sensor / params["lens"]
        half_w = half_h * W / (ycor * H)
        scale = 2 * half_h
    off_x, off_y = params["shift_x"] * scale, params["shift_y"] * scale
    X_cam = np.linalg.inv(matrix_world) @ np.append(X_world, 1.0)
    x, y = X_cam[0] / -X_cam[2], X_cam[1] / -X_cam[2]
    fx_frac = (x - (off_x - half_w)) / (2 * half_w)  # 0 at the left edge, 1 at the right
    fy_frac = (y - (off_y - half_h)) / (2 * half_h)  # 0 at the bottom edge, 1 at the top
    return np.array([fx_frac * W - 0.5, (1 - fy_frac) * H - 0.5])


@pytest.mark.parametrize("cam", CAMERAS)
def test_blender_camera_projects_like_the_pinhole(cam):
    W, H, fx, fy, cx, cy = cam
    K = _K(fx, fy, cx, cy)
    rng = np.random.default_rng(1)
    c2w = _random_pose(rng)
    params = blender_camera_params(K, W, H)
    mw = cam2world_opencv_to_blender(c2w)
    for _ in range(20):
        uv_target = rng.uniform([0, 0], [W, H])
        z = rng.uniform(0.5, 5.0)
        X_cam = z * np.linalg.solve(K, np.append(uv_target, 1.0))
        X_world = (c2w @ np.append(X_cam, 1.0))[:3]
        np.testing.assert_allclose(_project_via_frustum(params, W, H, mw, X_world), uv_target, atol=1e-7)


@pytest.mark.parametrize("cam", CAMERAS)
def test_real_blender_world_to_camera_view_matches_pinhole(cam):
    bpy = pytest.importorskip("bpy")
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Matrix, Vector

    W, H, fx, fy, cx, cy = cam
    K = _K(fx, fy, cx, cy)
    rng = np.random.default_rng(2)
    c2w = _random_pose(rng)
    params = blender_camera_params(K, W, H)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = params["pixel_aspect_x"]
    scene.render.pixel_aspect_y = params["pixel_aspect_y"]
    data = bpy.data.cameras.new("cam")
    for key in ("lens", "sensor_width", "sensor_height", "sensor_fit", "shift_x", "shift_y"):
        setattr(data, key, params[key])
    obj = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(obj)
    obj.matrix_world = Matrix(cam2world_opencv_to_blender(c2w).tolist())
    bpy.context.view_layer.update()

    for _ in range(20):
        uv_target = rng.uniform([0, 0], [W, H])
        X_cam = rng.uniform(0.5, 5.0) * np.linalg.solve(K, np.append(uv_target, 1.0))
        X_world = (c2w @ np.append(X_cam, 1.0))[:3]
        ndc = world_to_camera_view(scene, obj, Vector(X_world.tolist()))
        uv = np.array([ndc.x * W - 0.5, (1.0 - ndc.y) * H - 0.5])
        # Blender works in float32: allow 1e-3 px.
        np.testing.assert_allclose(uv, uv_target, atol=1e-3)


SAMPLE_SCENE = Path(__file__).resolve().parents[1] / "data" / "sample_scene"


def test_sample_scene_gt_matches_the_generator_layout():
    """The bundled gt.json (cameras read back from Blender through these conventions) equals the
    layout the generator asked for, recomputed here with look-at maths in float64."""
    pytest.importorskip("bpy")
    from data import make_sample_scene as gen
    from PIL import Image

    gt = json.loads((SAMPLE_SCENE / "gt.json").read_text())
    centres = gen.camera_centres()
    assert gt["num_images"] == len(gt["frames"]) == len(centres)
    f_expected = gen.LENS_MM / gen.SENSOR_MM * gen.WIDTH
    for frame, centre in zip(gt["frames"], centres):
        with Image.open(SAMPLE_SCENE / frame["file"]) as img:
            assert img.size == (frame["width"], frame["height"]) == (gen.WIDTH, gen.HEIGHT)
        assert frame["fx"] == pytest.approx(f_expected) and frame["fy"] == pytest.approx(f_expected)
        assert (frame["cx"], frame["cy"]) == ((gen.WIDTH - 1) / 2, (gen.HEIGHT - 1) / 2)
        R, t = np.array(frame["R_w2c"]), np.array(frame["t_w2c"])
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(-R.T @ t, centre, atol=1e-5)
        forward = np.subtract(gen.LOOK_AT, centre)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        np.testing.assert_allclose(R[2], forward, atol=1e-6)  # OpenCV z: the optical axis
        np.testing.assert_allclose(R[0], right, atol=1e-6)  # OpenCV x: right, level
        np.testing.assert_allclose(R[1], np.cross(forward, right), atol=1e-6)  # OpenCV y: down

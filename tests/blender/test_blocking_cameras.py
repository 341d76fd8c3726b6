"""Animated camera and image planes (real bpy, background mode).

The scene: photos on a full orbit around the origin, so the poses' quaternions pass through a
half turn and per-photo quaternions change sign somewhere along the path. Every check compares
with the per-photo camera objects the builders made, through Blender's own evaluation
(``frame_set``, ``matrix_world``, ``world_to_camera_view``).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras import anim_utils
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from PIL import Image

from conftest import load_addon

addon = load_addon()
from photo_recon.core.result import ImageResult, SceneResult  # noqa: E402
from photo_recon.core.synthetic import look_at_cam2world  # noqa: E402
from photo_recon.operators.apply import apply_result  # noqa: E402

pytestmark = pytest.mark.usefixtures("clean_data")

W, H = 32, 24


def make_scene(folder: Path, names: list[str], Ks: list[np.ndarray], write_photos=True) -> SceneResult:
    """Photo k (file ``names[k]``) sits at angle ``2 pi rank / n`` on the orbit, where ``rank`` is
    its place in natural name order, and sees points 3 units in front of it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ranks = np.argsort(np.argsort([int("".join(c for c in n if c.isdigit())) for n in names]))
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    images = []
    for k, name in enumerate(names):
        angle = 2 * np.pi * ranks[k] / len(names)
        c2w = look_at_cam2world(np.array([3 * np.cos(angle), 3 * np.sin(angle), 1.0]), np.zeros(3))
        pts = (pix @ np.linalg.inv(Ks[k]).T * 3.0) @ c2w[:3, :3].T + c2w[:3, 3]
        colors = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if write_photos:
            Image.fromarray(colors).save(folder / name)
        images.append(ImageResult(
            file=str(folder / name), photo_size=(W, H), K=Ks[k], cam2world=c2w,
            photo_from_map=np.eye(3), pts3d_world=pts.astype(np.float32),
            conf=np.full((H, W), 5.0, np.float32), colors=colors,
        ))
    return SceneResult(images=images, backend="test", conf_kind="synthetic", conf_threshold=1.0)


def import_scene(result: SceneResult, result_dir: Path) -> bpy.types.Collection:
    result.save(result_dir)
    return apply_result(bpy.context, result, result_dir, str(Path(result.images[0].file).parent))


K_SHARED = np.array([[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]])


@pytest.fixture(scope="module", autouse=True)
def registered():
    addon.register()
    yield
    addon.unregister()


def _photo_cameras(collection) -> dict[int, bpy.types.Object]:
    return {o["recon_index"]: o for o in collection.objects if o.get("recon_role") == "camera"}


def _animated(collection) -> bpy.types.Object:
    (obj,) = [o for o in collection.objects if o.get("recon_role") == "animated_camera"]
    return obj


def _key_values(id_block, data_path: str) -> np.ndarray:
    """``(keys, channels)`` values of the keys on ``data_path`` (read through the channelbag)."""
    animation = id_block.animation_data
    channelbag = anim_utils.action_get_channelbag_for_slot(animation.action, animation.action_slot)
    curves = sorted((f for f in channelbag.fcurves if f.data_path == data_path),
                    key=lambda f: f.array_index)
    return np.array([[p.co[1] for p in f.keyframe_points] for f in curves]).T


def _check_follows_photos(collection, result, frame_start: int, order: list[int]) -> None:
    scene = bpy.context.scene
    animated = _animated(collection)
    cameras = _photo_cameras(collection)
    background = animated.data.background_images[0]
    for i, k in enumerate(order):
        scene.frame_set(frame_start + i)
        photo_camera = cameras[k]
        assert np.allclose(np.array(animated.matrix_world), np.array(photo_camera.matrix_world),
                           atol=1e-5)
        for name in ("lens", "shift_x", "shift_y", "sensor_fit"):
            assert getattr(animated.data, name) == pytest.approx(getattr(photo_camera.data, name))
        shown = background.image.filepath_from_user(image_user=background.image_user)
        assert Path(shown).read_bytes() == Path(result.images[k].file).read_bytes()


def test_animated_camera_matches_every_photo_and_keeps_quaternion_signs(tmp_path):
    names = [f"clip_{n}.png" for n in (7, 12, 1, 3, 9, 10, 2, 8, 4, 5, 11, 6)]  # unpadded, shuffled
    result = make_scene(tmp_path / "photos", names, [K_SHARED] * len(names))
    collection = import_scene(result, tmp_path / "job" / "result")
    assert bpy.ops.recon.animated_camera(frame_start=3, order="NAME") == {"FINISHED"}
    order = list(np.argsort([int(n[5:-4]) for n in names]))
    scene = bpy.context.scene
    animated = _animated(collection)
    assert (scene.frame_start, scene.frame_end) == (3, 3 + len(names) - 1)
    assert scene.camera == animated
    assert (scene.render.resolution_x, scene.render.resolution_y) == (W, H)
    _check_follows_photos(collection, result, 3, order)
    # The image sequence: one image of source SEQUENCE, refreshed with the frame.
    background = animated.data.background_images[0]
    assert background.image.source == "SEQUENCE" and background.image_user.use_auto_refresh

    quats = _key_values(animated, "rotation_quaternion")
    assert quats.shape == (len(names), 4)
    assert (np.einsum("kc,kc->k", quats[1:], quats[:-1]) > 0).all()
    # The per-photo cameras' own quaternions do change sign along the orbit.
    cameras = _photo_cameras(collection)
    raw = np.array([tuple(cameras[k].matrix_world.to_quaternion()) for k in order])
    assert (np.einsum("kc,kc->k", raw[1:], raw[:-1]) < 0).any()
    # A shared focal length is set once, not keyed.
    assert animated.data.animation_data is None

    # Again: the new camera replaces the old one.
    assert bpy.ops.recon.animated_camera(frame_start=1, order="NAME") == {"FINISHED"}
    _check_follows_photos(collection, result, 1, order)

    # Scaling the scene re-keys it: it still follows the (moved) photo cameras.
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    cameras[0].select_set(True)
    cameras[1].select_set(True)
    assert bpy.ops.recon.set_scale(mode="CAMERAS", distance=10.0) == {"FINISHED"}
    centres = [np.array(cameras[k].matrix_world.translation) for k in (0, 1)]
    assert np.linalg.norm(centres[0] - centres[1]) == pytest.approx(10.0, rel=1e-6)
    _check_follows_photos(collection, result, 1, order)


def test_numbered_frames_play_in_place_and_a_varying_focal_is_keyed(tmp_path):
    names = [f"frame_{n:04d}.png" for n in range(5, 13)]
    Ks = [np.array([[30.0 + 3 * k, 0, 15.5 + k], [0, 30.0 + 3 * k, 11.5], [0, 0, 1]])
          for k in range(len(names))]
    result = make_scene(tmp_path / "photos", names, Ks)
    collection = import_scene(result, tmp_path / "job" / "result")
    assert bpy.ops.recon.animated_camera(frame_start=1, order="INPUT") == {"FINISHED"}
    animated = _animated(collection)
    background = animated.data.background_images[0]
    assert Path(background.image.filepath) == Path(result.images[0].file)  # no links needed
    assert background.image_user.frame_offset == 4
    assert not (tmp_path / "job" / "result" / "animated_camera_frames").exists()
    lenses = _key_values(animated.data, "lens")[:, 0]
    assert len(lenses) == len(names) and np.ptp(lenses) > 0
    _check_follows_photos(collection, result, 1, list(range(len(names))))


def test_missing_photos_give_a_camera_without_footage(tmp_path):
    names = [f"shot{n}.png" for n in range(4)]
    result = make_scene(tmp_path / "photos", names, [K_SHARED] * 4, write_photos=False)
    collection = import_scene(result, tmp_path / "job" / "result")
    assert bpy.ops.recon.animated_camera(frame_start=1) == {"FINISHED"}
    animated = _animated(collection)
    assert len(animated.data.background_images) == 0
    for i in range(4):
        bpy.context.scene.frame_set(1 + i)
        expected = _photo_cameras(collection)[i].matrix_world
        assert np.allclose(np.array(animated.matrix_world), np.array(expected), atol=1e-5)


def _view_coords(camera, pts_world) -> np.ndarray:
    """Blender's normalised camera-view coordinates (x, y in 0..1 from bottom-left, z depth)."""
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = camera.data["recon_resolution"]
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = camera.data["recon_pixel_aspect"]
    scene.render.resolution_percentage = 100
    return np.array([tuple(world_to_camera_view(scene, camera, Vector(p))) for p in pts_world])


def _plane_corners_in_view(camera) -> tuple[np.ndarray, bpy.types.Object]:
    (plane,) = [c for c in camera.children if c.get("recon_role") == "image_plane"]
    bpy.context.view_layer.update()
    corners = [plane.matrix_world @ v.co for v in plane.data.vertices]
    return _view_coords(camera, corners), plane


def test_image_planes_fill_their_cameras_view_at_the_depth(tmp_path):
    names = [f"p{n}.png" for n in range(3)]
    Ks = [np.array([[40.0, 0, 12.0], [0, 33.0, 13.5], [0, 0, 1]]),  # fx != fy, off-centre
          np.array([[28.0, 0, 17.0], [0, 31.0, 9.0], [0, 0, 1]]),
          K_SHARED]
    result = make_scene(tmp_path / "photos", names, Ks)
    collection = import_scene(result, tmp_path / "job" / "result")
    assert bpy.ops.recon.image_planes(depth=2.0, opacity=0.5) == {"FINISHED"}
    image_corners = {(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)}
    for index, camera in _photo_cameras(collection).items():
        view, plane = _plane_corners_in_view(camera)
        assert {tuple(np.round(xy, 5) + 0.0) for xy in view[:, :2]} == image_corners
        assert np.allclose(view[:, 2], 2.0, atol=1e-5)
        nodes = plane.data.materials[0].node_tree.nodes
        (texture,) = [n for n in nodes if n.bl_idname == "ShaderNodeTexImage"]
        assert Path(texture.image.filepath) == Path(result.images[index].file)
        # The face looks back at the camera.
        normal = plane.matrix_world.to_3x3() @ plane.data.polygons[0].normal
        to_camera = camera.matrix_world.translation - plane.matrix_world @ plane.data.vertices[0].co
        assert normal.dot(to_camera) > 0

    # Again with another depth: one plane per camera; scaling the scene by 2 doubles the depth.
    assert bpy.ops.recon.image_planes(depth=1.5) == {"FINISHED"}
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    empty = bpy.data.objects.new("A", None)
    bpy.context.scene.collection.objects.link(empty)
    empty.select_set(True)
    bpy.context.scene.cursor.location = (1.0, 0.0, 0.0)
    assert bpy.ops.recon.set_scale(mode="POINTS", distance=2.0) == {"FINISHED"}
    for camera in _photo_cameras(collection).values():
        view, _plane = _plane_corners_in_view(camera)
        assert {tuple(np.round(xy, 5) + 0.0) for xy in view[:, :2]} == image_corners
        assert np.allclose(view[:, 2], 3.0, atol=1e-5)


def test_image_planes_without_a_selected_camera_make_nothing(tmp_path):
    result = make_scene(tmp_path / "photos", ["a1.png"], [K_SHARED])
    collection = import_scene(result, tmp_path / "job" / "result")
    before = set(bpy.data.objects)
    with pytest.raises(RuntimeError, match="No photo camera"):
        bpy.ops.recon.image_planes(depth=1.0, selected_only=True)
    assert set(bpy.data.objects) == before
    assert not [o for o in collection.objects if o.get("recon_role") == "image_plane"]


def test_image_plane_of_a_photo_whose_file_has_gone_is_grey(tmp_path):
    # Opening an old .blend after the photo moved: its background image loads as 0 x 0.
    result = make_scene(tmp_path / "photos", ["q0.png", "q1.png"], [K_SHARED, K_SHARED])
    collection = import_scene(result, tmp_path / "job" / "result")
    cameras = _photo_cameras(collection)
    Path(result.images[1].file).unlink()
    cameras[1].data.background_images[0].image.reload()
    assert bpy.ops.recon.image_planes(depth=1.0) == {"FINISHED"}
    textured = {}
    for index, camera in cameras.items():
        _view, plane = _plane_corners_in_view(camera)
        nodes = plane.data.materials[0].node_tree.nodes
        textured[index] = [n for n in nodes if n.bl_idname == "ShaderNodeTexImage"] != []
    assert textured == {0: True, 1: False}

"""Level, Set Scale and Export operators on a scene with known truth (real bpy, background mode).

The truth frame has a floor at z = 0 with +Z up, a wall at y = 3, metres as units, and cameras
1.5 m above the floor looking down at it. The reconstruction handed to the operators is the
truth moved by a tilted, offset and scaled similarity, as a backend would return it. Every
check maps truth quantities into Blender's world through the objects themselves (vertex
positions, camera matrices), never through the transform the code computed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import bpy
import numpy as np
import pytest
from mathutils import Vector

from conftest import load_addon

addon = load_addon()
from photo_recon.core.blocking.transform import apply_similarity  # noqa: E402
from photo_recon.core.geometry.conventions import cam2world_opencv_to_blender  # noqa: E402
from photo_recon.core.result import ImageResult, SceneResult  # noqa: E402
from photo_recon.core.synthetic import look_at_cam2world  # noqa: E402
from photo_recon.operators.apply import apply_result  # noqa: E402

GRID_W, GRID_H = 40, 30
CAMERA_HEIGHT = 1.5
WALL_Y = 3.0
CONF_THRESHOLD = 1.5


def _truth_scene(rng: np.random.Generator):
    """Truth-frame cameras and their pointmaps: every pixel sees the floor or the wall.

    Returns:
        ``(images, on_floor)`` with ``on_floor`` a list of ``(H, W)`` bool per image.
    """
    K = np.array([[30.0, 0, (GRID_W - 1) / 2], [0, 30.0, (GRID_H - 1) / 2], [0, 0, 1]])
    v, u = np.mgrid[0:GRID_H, 0:GRID_W].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    images, on_floor = [], []
    for k in range(4):
        angle = -0.6 + 0.4 * k
        centre = np.array([2.5 * np.sin(angle), -2.5 * np.cos(angle), CAMERA_HEIGHT])
        c2w = look_at_cam2world(centre, np.array([0.0, 1.0, 0.3]))
        rays = pix @ np.linalg.inv(K).T @ c2w[:3, :3].T
        with np.errstate(divide="ignore"):
            t_floor = np.where(rays[..., 2] < 0, -centre[2] / rays[..., 2], np.inf)
            t_wall = np.where(rays[..., 1] > 0, (WALL_Y - centre[1]) / rays[..., 1], np.inf)
        floor = t_floor < t_wall
        t = np.minimum(t_floor, t_wall)
        pts = centre + rays * t[..., None]
        pts[floor, 2] += rng.normal(0.0, 0.003, floor.sum())  # a little noise on the floor
        conf = rng.uniform(2.0, 10.0, (GRID_H, GRID_W)).astype(np.float32)
        images.append(ImageResult(
            file=f"/nonexistent/photo_{k}.jpg",
            photo_size=(GRID_W * 2, GRID_H * 2),
            K=K.copy(),
            cam2world=c2w,
            # Photos at twice the map size (pixel centres: photo = 2 map + 0.5).
            photo_from_map=np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]]),
            pts3d_world=pts.astype(np.float32),
            conf=conf,
            colors=rng.integers(0, 256, (GRID_H, GRID_W, 3), dtype=np.uint8),
        ))
        on_floor.append(floor)
    return images, on_floor


def _random_similarity(rng: np.random.Generator, scale: float) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    T = np.eye(4)
    T[:3, :3] = scale * q
    T[:3, 3] = rng.normal(0.0, 3.0, 3)
    return T


class Truth:
    """The truth scene, its reconstruction (moved by a similarity) imported into Blender."""

    def __init__(self, tmp_path: Path, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        images, self.on_floor = _truth_scene(rng)
        self.truth = SceneResult(images=images, backend="test", conf_kind="synthetic",
                                 conf_threshold=CONF_THRESHOLD)
        self.recon = apply_similarity(self.truth, _random_similarity(rng, 0.37))
        self.result_dir = tmp_path / "job" / "result"
        self.recon.save(self.result_dir)
        self.collection = apply_result(bpy.context, self.recon, self.result_dir, "/photos")
        # Every pixel is confident, so the point cloud holds all pixels in image order.
        self.truth_pts = np.concatenate([im.pts3d_world.reshape(-1, 3) for im in images])
        self.floor_mask = np.concatenate([f.ravel() for f in self.on_floor])

    def points(self) -> np.ndarray:
        """``(N, 3)`` float64 Blender world positions of the point cloud's vertices."""
        (obj,) = [o for o in self.collection.objects if o.get("recon_role") == "points"]
        out = np.empty(len(obj.data.vertices) * 3, np.float32)
        obj.data.attributes["position"].data.foreach_get("vector", out)
        pts = out.reshape(-1, 3).astype(np.float64)
        matrix = np.array(obj.matrix_world)
        return pts @ matrix[:3, :3].T + matrix[:3, 3]

    def cameras(self) -> list[bpy.types.Object]:
        cams = [o for o in self.collection.objects if o.get("recon_role") == "camera"]
        return sorted(cams, key=lambda o: o["recon_index"])


@pytest.fixture(scope="module", autouse=True)
def registered():
    addon.register()
    yield
    addon.unregister()


@pytest.fixture
def scene(tmp_path, clean_data):
    bpy.context.scene.recon.auto_threshold = True
    bpy.context.scene.cursor.location = (0.0, 0.0, 0.0)
    return Truth(tmp_path)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _plane_normal(pts: np.ndarray) -> np.ndarray:
    """Least-squares normal (float64 SVD), pointing to +Z's side."""
    _, _, vt = np.linalg.svd(pts - pts.mean(axis=0))
    return vt[-1] * np.sign(vt[-1][2])


def _check_cameras_match_result(scene: Truth) -> SceneResult:
    """Each camera object's matrix_world is the Blender pose of the saved result's camera, and
    the point cloud is the saved result's points."""
    saved = SceneResult.load(bpy.context.scene.recon.last_result_dir)
    for camera in scene.cameras():
        expected = cam2world_opencv_to_blender(saved.images[camera["recon_index"]].cam2world)
        assert np.allclose(np.array(camera.matrix_world), expected, atol=1e-5)
    saved_pts = np.concatenate([im.pts3d_world.reshape(-1, 3) for im in saved.images])
    assert np.allclose(scene.points(), saved_pts, atol=1e-5)
    return saved


def test_level_puts_the_true_floor_on_z0_for_points_and_cameras(scene):
    assert bpy.ops.recon.level_scene(origin="FIRST_CAMERA") == {"FINISHED"}
    props = bpy.context.scene.recon
    assert Path(props.last_result_dir) != scene.result_dir and Path(props.last_result_dir).is_dir()
    assert (scene.result_dir / "result.json").is_file()  # the old result is kept (undo)

    pts = scene.points()
    floor = pts[scene.floor_mask]
    assert _angle_deg(_plane_normal(floor), np.array([0, 0, 1.0])) < 1.0
    extent = np.ptp(pts, axis=0).max()
    assert abs(np.median(floor[:, 2])) < 0.01 * extent
    assert np.median(pts[~scene.floor_mask][:, 2]) > 0  # the wall stands on the floor

    # Cameras: the truth floor normal seen from each camera, carried to the world by the
    # camera object's own rotation, is +Z; the cameras are above the floor at one height.
    heights = []
    for camera, truth_im in zip(scene.cameras(), scene.truth.images):
        rotation_cv = np.array(camera.matrix_world)[:3, :3] @ np.diag([1.0, -1.0, -1.0])
        normal_cam = truth_im.cam2world[:3, :3].T @ np.array([0, 0, 1.0])
        assert _angle_deg(rotation_cv @ normal_cam, np.array([0, 0, 1.0])) < 1.0
        heights.append(camera.matrix_world.translation.z)
    assert np.allclose(heights, heights[0], rtol=0.01) and heights[0] > 0
    # The origin is the floor point under the first camera.
    assert np.allclose(scene.cameras()[0].matrix_world.translation.xy, (0, 0), atol=1e-3 * extent)

    saved = _check_cameras_match_result(scene)
    assert _check_level_of(saved, scene) < 1.0


def _check_level_of(result: SceneResult, scene: Truth) -> float:
    floor = np.concatenate([im.pts3d_world[f] for im, f in zip(result.images, scene.on_floor)])
    return _angle_deg(_plane_normal(floor.astype(np.float64)), np.array([0, 0, 1.0]))


def test_level_origin_at_the_cursor_and_reimport_keeps_it(scene):
    target = scene.points()[np.flatnonzero(scene.floor_mask)[100]]
    bpy.context.scene.cursor.location = Vector(target)
    assert bpy.ops.recon.level_scene(origin="CURSOR") == {"FINISHED"}
    moved = scene.points()[np.flatnonzero(scene.floor_mask)[100]]
    assert np.linalg.norm(moved) < 0.01 * np.ptp(scene.points(), axis=0).max()
    before = scene.points()
    assert bpy.ops.recon.reimport() == {"FINISHED"}
    assert np.allclose(scene.points(), before, atol=1e-6)
    _check_cameras_match_result(scene)


def _truth_distance_ratios(scene: Truth, pairs: np.ndarray) -> np.ndarray:
    """Blender distance / truth distance for point pairs and for all camera pairs."""
    pts = scene.points()
    ratios = list(np.linalg.norm(pts[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
                  / np.linalg.norm(scene.truth_pts[pairs[:, 0]] - scene.truth_pts[pairs[:, 1]], axis=1))
    centres = [np.array(c.matrix_world.translation) for c in scene.cameras()]
    for a in range(len(centres)):
        for b in range(a + 1, len(centres)):
            truth = np.linalg.norm(scene.truth.images[a].cam2world[:3, 3]
                                   - scene.truth.images[b].cam2world[:3, 3])
            ratios.append(np.linalg.norm(centres[a] - centres[b]) / truth)
    return np.array(ratios)


def _random_pairs(n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, n, (200, 2))
    return pairs[pairs[:, 0] != pairs[:, 1]]


def _empty_at(location, name: str) -> bpy.types.Object:
    obj = bpy.data.objects.new(name, None)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = Vector(location)
    return obj


def _select(*objects, active=None) -> None:
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = active or (objects[0] if objects else None)


def test_scale_between_two_picked_points_after_levelling(scene):
    assert bpy.ops.recon.level_scene() == {"FINISHED"}
    a, b = 10, len(scene.truth_pts) - 7
    pts = scene.points()
    empties = [_empty_at(pts[a], "A"), _empty_at(pts[b], "B")]
    _select(*empties)
    true_distance = float(np.linalg.norm(scene.truth_pts[a] - scene.truth_pts[b]))
    assert bpy.ops.recon.set_scale(mode="POINTS", distance=true_distance, units="m") == {"FINISHED"}
    ratios = _truth_distance_ratios(scene, _random_pairs(len(pts)))
    assert np.abs(ratios - 1.0).max() < 0.01
    saved = _check_cameras_match_result(scene)
    assert saved.units == "m"
    # Each edit is a new folder beside the first (the name does not grow).
    assert Path(bpy.context.scene.recon.last_result_dir).name == "result-edit2"
    # Levelling survives scaling: the floor is still z = 0, +Z up.
    assert _check_level_of(saved, scene) < 1.0
    assert abs(np.median(scene.points()[scene.floor_mask][:, 2])) < 0.01


def test_only_the_last_edits_are_kept_beside_the_result(scene):
    from photo_recon.operators.blocking.common import KEPT_EDITS  # the add-on's own constant

    cams = scene.cameras()
    for k in range(KEPT_EDITS + 2):
        _select(cams[0], cams[3])
        assert bpy.ops.recon.set_scale(mode="CAMERAS", distance=1.0 + k) == {"FINISHED"}
    folders = sorted(p.name for p in scene.result_dir.parent.iterdir())
    assert len(folders) == 1 + KEPT_EDITS and "result" in folders  # the original stays
    newest = Path(bpy.context.scene.recon.last_result_dir)
    assert newest.name in folders
    distance = np.linalg.norm(np.subtract(*(SceneResult.load(newest).images[i].cam2world[:3, 3]
                                            for i in (0, 3))))
    assert distance == pytest.approx(KEPT_EDITS + 2.0, rel=1e-6)


def test_scale_between_one_object_and_the_cursor(scene):
    a, b = 3, 900
    pts = scene.points()
    _select(_empty_at(pts[a], "A"))
    bpy.context.scene.cursor.location = Vector(pts[b])
    true_distance = float(np.linalg.norm(scene.truth_pts[a] - scene.truth_pts[b]))
    assert bpy.ops.recon.set_scale(mode="POINTS", distance=true_distance) == {"FINISHED"}
    assert np.abs(_truth_distance_ratios(scene, _random_pairs(len(pts))) - 1.0).max() < 0.01


def _scale_between_selected_vertices(obj: bpy.types.Object, picked: tuple[int, int],
                                     true_distance: float) -> None:
    """Select vertices ``picked`` of ``obj`` in Edit Mode and Set Scale between them."""
    for k, vertex in enumerate(obj.data.vertices):
        vertex.select = k in picked
    _select(obj)
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        assert bpy.ops.recon.set_scale(mode="POINTS", distance=true_distance) == {"FINISHED"}
    finally:
        if bpy.context.object is not None and bpy.context.object.mode == "EDIT":
            bpy.ops.object.mode_set(mode="OBJECT")  # the operator may have rebuilt obj


def test_scale_between_two_selected_vertices_in_edit_mode(scene):
    pts = scene.points()
    a, b = 42, 1500
    mesh = bpy.data.meshes.new("picks")
    mesh.from_pydata([tuple(pts[a]), tuple(pts[b]), tuple(pts[0])], [], [])
    obj = bpy.data.objects.new("picks", mesh)
    bpy.context.scene.collection.objects.link(obj)
    true_distance = float(np.linalg.norm(scene.truth_pts[a] - scene.truth_pts[b]))
    _scale_between_selected_vertices(obj, (0, 1), true_distance)
    assert np.abs(_truth_distance_ratios(scene, _random_pairs(len(pts))) - 1.0).max() < 0.01


def test_scale_between_vertices_of_the_reconstruction_the_user_had_scaled(scene):
    """The points object is rebuilt from the result, so a hand-made transform on it is not
    part of the measurement: its own vertices are measured in the result's frame."""
    (points,) = [o for o in scene.collection.objects if o.get("recon_role") == "points"]
    points.scale = (2.0, 2.0, 2.0)
    a, b = 42, 1500
    true_distance = float(np.linalg.norm(scene.truth_pts[a] - scene.truth_pts[b]))
    _scale_between_selected_vertices(points, (a, b), true_distance)
    pairs = _random_pairs(len(scene.truth_pts))
    assert np.abs(_truth_distance_ratios(scene, pairs) - 1.0).max() < 0.01


def test_camera_height_needs_the_active_object_to_be_a_camera(scene):
    # A selected camera that is not the active object is not "the active photo camera".
    _select(scene.cameras()[1], active=_empty_at((0, 0, 0), "O"))
    with pytest.raises(RuntimeError, match="Make a photo camera of the reconstruction the active"):
        bpy.ops.recon.set_scale(mode="HEIGHT", distance=CAMERA_HEIGHT)


def test_scale_between_cameras_and_from_camera_height(scene):
    cams = scene.cameras()
    _select(cams[0], cams[3])
    truth = np.linalg.norm(scene.truth.images[0].cam2world[:3, 3]
                           - scene.truth.images[3].cam2world[:3, 3])
    assert bpy.ops.recon.set_scale(mode="CAMERAS", distance=float(truth)) == {"FINISHED"}
    pairs = _random_pairs(len(scene.truth_pts))
    assert np.abs(_truth_distance_ratios(scene, pairs) - 1.0).max() < 0.01

    # Now halve it, then recover the metres from the second camera's height above the floor.
    _select(_empty_at((0, 0, 0), "O"))
    bpy.context.scene.cursor.location = (2.0, 0.0, 0.0)
    assert bpy.ops.recon.set_scale(mode="POINTS", distance=1.0) == {"FINISHED"}
    assert np.abs(_truth_distance_ratios(scene, pairs) - 0.5).max() < 0.005
    _select(scene.cameras()[1])
    assert bpy.ops.recon.set_scale(mode="HEIGHT", distance=CAMERA_HEIGHT) == {"FINISHED"}
    assert np.abs(_truth_distance_ratios(scene, pairs) - 1.0).max() < 0.01


@pytest.mark.parametrize("pick, message", [
    ("nothing", "0 objects are selected"),
    ("same point", "zero or unknown"),
    ("one camera", "Select two photo cameras"),
])
def test_bad_picks_change_nothing(scene, pick, message):
    before_dir = bpy.context.scene.recon.last_result_dir
    before_pts = scene.points()
    mode = "POINTS"
    if pick == "nothing":
        _select()
    elif pick == "same point":
        _select(_empty_at((1.0, 2.0, 3.0), "A"))
        bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    else:
        _select(scene.cameras()[0])
        mode = "CAMERAS"
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.recon.set_scale(mode=mode, distance=2.0)
    assert bpy.context.scene.recon.last_result_dir == before_dir
    assert sorted(p.name for p in scene.result_dir.parent.iterdir()) == ["result"]
    assert np.array_equal(scene.points(), before_pts)


def test_level_without_a_floor_is_refused(scene, tmp_path):
    # Only the wall: no plane below the cameras faces up.
    walls = [
        dataclasses.replace(im, conf=np.where(floor, 0.0, im.conf).astype(np.float32))
        for im, floor in zip(scene.recon.images, scene.on_floor)
    ]
    result = SceneResult(images=walls, backend="test", conf_threshold=CONF_THRESHOLD)
    result.save(tmp_path / "walls" / "result")
    bpy.context.scene.recon.last_result_dir = str(tmp_path / "walls" / "result")
    with pytest.raises(RuntimeError, match="No floor found"):
        bpy.ops.recon.level_scene()
    assert bpy.context.scene.recon.last_result_dir == str(tmp_path / "walls" / "result")


def test_exports_of_the_levelled_result_read_back(scene, tmp_path):
    assert bpy.ops.recon.level_scene() == {"FINISHED"}
    saved = SceneResult.load(bpy.context.scene.recon.last_result_dir)
    n_points = sum(int((im.conf > CONF_THRESHOLD).sum()) for im in saved.images)

    for fmt in ("COLMAP_BIN", "COLMAP_TXT"):
        folder = tmp_path / fmt
        assert bpy.ops.recon.export_result(format=fmt, directory=str(folder)) == {"FINISHED"}
        suffix = ".bin" if fmt == "COLMAP_BIN" else ".txt"
        assert sorted(p.name for p in folder.iterdir()) == [
            f"cameras{suffix}", f"images{suffix}", f"points3D{suffix}"]
    pycolmap = pytest.importorskip("pycolmap")
    for fmt in ("COLMAP_BIN", "COLMAP_TXT"):
        model = pycolmap.Reconstruction(str(tmp_path / fmt))
        assert model.num_images() == len(saved.images) and model.num_points3D() == n_points
        for image in model.images.values():
            camera = next(c for c in scene.cameras() if image.name.startswith(c.name))
            cam_from_world = np.vstack([image.cam_from_world().matrix(), [0, 0, 0, 1]])
            world_from_cam = np.linalg.inv(cam_from_world)
            assert np.allclose(cam2world_opencv_to_blender(world_from_cam),
                               np.array(camera.matrix_world), atol=1e-5)
        xyz = np.array([p.xyz for p in model.points3D.values()])
        assert np.abs(np.median(xyz[:, 2])) < 0.05  # the floor dominates and lies on z = 0


def test_ply_and_transforms_json_exports(scene, tmp_path):
    assert bpy.ops.recon.export_result(format="NERF", directory=str(tmp_path / "nerf")) == {"FINISHED"}
    content = json.loads((tmp_path / "nerf" / "transforms.json").read_text())
    assert content["ply_file_path"] == "points.ply"
    for frame, camera in zip(content["frames"], scene.cameras()):
        assert np.allclose(frame["transform_matrix"], np.array(camera.matrix_world), atol=1e-5)
    assert bpy.ops.recon.export_result(format="PLY", directory=str(tmp_path / "ply")) == {"FINISHED"}
    data = (tmp_path / "ply" / "points.ply").read_bytes()
    header, _, body = data.partition(b"end_header\n")
    count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
    assert count == len(scene.truth_pts)
    xyz = np.frombuffer(body, np.dtype([("p", "<f4", 3), ("n", "<f4", 3), ("c", "u1", 3)]))["p"]
    assert np.allclose(np.sort(xyz, axis=0), np.sort(scene.points(), axis=0), atol=1e-4)
    with pytest.raises(RuntimeError, match="no sparse points"):
        bpy.ops.recon.export_result(format="PLY", directory=str(tmp_path / "x"), use_sparse=True)


@pytest.mark.parametrize("fmt", ["PLY", "COLMAP_BIN"])
def test_export_to_a_folder_that_cannot_be_written_says_so(scene, fmt):
    with pytest.raises(RuntimeError, match=r"Export failed: cannot write /proc/recon-x.*"
                                           r"Choose a folder you can write to"):
        bpy.ops.recon.export_result(directory="/proc/recon-x/", format=fmt)


def test_level_rebuilds_the_objects_when_the_user_deleted_them(scene):
    bpy.data.batch_remove(list(scene.collection.objects) + [scene.collection])
    assert bpy.ops.recon.level_scene() == {"FINISHED"}
    scene.collection = bpy.data.collections[bpy.context.scene.recon.last_collection]
    floor = scene.points()[scene.floor_mask]
    assert _angle_deg(_plane_normal(floor), np.array([0, 0, 1.0])) < 1.0
    _check_cameras_match_result(scene)


def test_panel_sits_in_the_recon_tab_and_operators_need_a_result(scene):
    panel = bpy.types.RECON_PT_blocking
    assert (panel.bl_parent_id, panel.bl_category) == ("RECON_PT_main", "Recon")
    operators = (bpy.ops.recon.level_scene, bpy.ops.recon.set_scale, bpy.ops.recon.export_result,
                 bpy.ops.recon.animated_camera, bpy.ops.recon.image_planes)
    assert all(op.poll() for op in operators)
    bpy.context.scene.recon.last_result_dir = ""
    assert not any(op.poll() for op in operators)
    # A script calling one anyway learns why, not just "poll() failed, context is incorrect".
    for op in (*operators, bpy.ops.recon.reimport, bpy.ops.recon.show_maps):
        with pytest.raises(RuntimeError, match="No reconstruction in this scene yet: press Reconstruct"):
            op()

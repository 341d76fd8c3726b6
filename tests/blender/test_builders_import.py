"""Importing a reconstruction into Blender: cameras checked through Blender's own projection,
points and meshes checked against the masks, all-or-nothing on failure (real bpy)."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from conftest import load_addon

load_addon()
from photo_recon.core.errors import InputError  # noqa: E402
from photo_recon.core.masks import sky_mask  # noqa: E402
from photo_recon.core.result import ImageResult, SceneResult  # noqa: E402
from photo_recon.operators.builders import (  # noqa: E402
    ImportOptions,
    build_map_images,
    import_result,
    rebuild_geometry,
)
from photo_recon.operators.builders.maps import jet  # noqa: E402


def _new_blocks(before):
    """Names of the data-blocks made since ``before`` (the ``clean_data`` fixture's value)."""
    return [b.name for kind, old in before.items() for b in set(getattr(bpy.data, kind)) - old]


def _rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def make_image(name, photo_size, K_photo, photo_from_map, map_size, seed, depth=None):
    """An ImageResult whose every map pixel sees a world point at a known depth.

    Args:
        photo_size: (W, H) of the original photo; K_photo its intrinsics (pixel centres at
            integers); photo_from_map the map->photo affine; map_size (w, h) of the map grid.
        depth: (h, w) z-depths, default random in 2..4.
    """
    rng = np.random.default_rng(seed)
    w, h = map_size
    K_map = np.linalg.inv(photo_from_map) @ K_photo
    if depth is None:
        depth = rng.uniform(2.0, 4.0, size=(h, w))
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K_map).T
    pts_cam = rays * depth[..., None]
    cam2world = np.eye(4)
    cam2world[:3, :3] = _rotation(seed)
    cam2world[:3, 3] = rng.normal(size=3)
    pts_world = pts_cam @ cam2world[:3, :3].T + cam2world[:3, 3]
    return ImageResult(
        file=f"/nonexistent/{name}.jpg",
        photo_size=photo_size,
        K=K_map,
        cam2world=cam2world,
        photo_from_map=np.asarray(photo_from_map, np.float64),
        pts3d_world=pts_world.astype(np.float32),
        conf=rng.uniform(1.0, 10.0, size=(h, w)).astype(np.float32),
        colors=rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8),
    )


def _scale_offset(sx, sy, tx, ty):
    return np.array([[sx, 0.0, tx], [0.0, sy, ty], [0.0, 0.0, 1.0]])


# Landscape and portrait photos, principal points off centre, fx != fy both ways, map grids
# that are scaled (and cropped: an offset) copies of the photo, as DUSt3R's loader makes them.
CASES = {
    "landscape_4032x3024": (
        (4032, 3024), [[3100.0, 0, 2100.0], [0, 3100.0, 1450.0], [0, 0, 1]],
        _scale_offset(126.0, 126.0, 62.5, 62.5), (32, 24),
    ),
    "portrait_fx_gt_fy": (
        (3024, 4032), [[3300.0, 0, 1400.0], [0, 3000.0, 2100.0], [0, 0, 1]],
        _scale_offset(126.0, 126.0, 62.5, 62.5), (24, 32),
    ),
    "landscape_fy_gt_fx_cropped": (
        (640, 480), [[500.0, 0, 300.0], [0, 560.0, 260.0], [0, 0, 1]],
        _scale_offset(20.0, 20.0, 9.5 + 20.0, 9.5), (30, 24),
    ),
    "portrait_square_pixels": (
        (480, 720), [[610.0, 0, 251.0], [0, 610.0, 340.0], [0, 0, 1]],
        _scale_offset(15.0, 15.0, 7.0, 7.0), (32, 48),
    ),
}


def _mesh_positions(obj) -> np.ndarray:
    mesh = obj.data
    out = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", out)
    return out.reshape(-1, 3)


def _points_object(collection):
    (obj,) = [o for o in collection.objects if o.get("recon_role") == "points"]
    return obj


def _project_through_blender(scene, camera, pts_world) -> np.ndarray:
    """Photo pixel coordinates (our pixel-centre convention) from Blender's camera view."""
    render = scene.render
    render.resolution_x, render.resolution_y = camera.data["recon_resolution"]
    render.pixel_aspect_x, render.pixel_aspect_y = camera.data["recon_pixel_aspect"]
    render.resolution_percentage = 100
    ndc = np.array([tuple(world_to_camera_view(scene, camera, Vector(p))) for p in pts_world])
    assert (ndc[:, 2] > 0).all()
    width, height = render.resolution_x, render.resolution_y
    return np.stack([ndc[:, 0] * width - 0.5, (1.0 - ndc[:, 1]) * height - 0.5], axis=1)


def test_every_point_lands_on_its_photo_pixel(clean_data):
    images = [make_image(name, *case, seed=k) for k, (name, case) in enumerate(CASES.items())]
    result = SceneResult(images=images, backend="test")
    collection = import_result(result, ImportOptions(conf_threshold=0.0), "Projection")
    cameras = [o for o in collection.objects if o.type == "CAMERA"]
    assert [c.name for c in cameras] == list(CASES)
    pts = _mesh_positions(_points_object(collection))
    assert len(pts) == sum(im.conf.size for im in images)
    start = 0
    scene = bpy.context.scene
    for im, camera in zip(images, cameras):
        h, w = im.conf.shape
        v, u = np.mgrid[0:h, 0:w]
        expected = (np.stack([u.ravel(), v.ravel(), np.ones(h * w)], 0).T @ im.photo_from_map.T)[:, :2]
        got = _project_through_blender(scene, camera, pts[start:start + h * w])
        start += h * w
        err = np.abs(got - expected).max()
        assert err < 0.02, f"{camera.name}: max reprojection error {err:.4f} px"


def test_render_settings_follow_first_camera_and_warn_on_mixed_sizes(clean_data):
    same = [make_image(f"s{k}", *CASES["landscape_4032x3024"], seed=k) for k in range(2)]
    collection = import_result(SceneResult(images=same, backend="test"), ImportOptions(), "Same")
    render = bpy.context.scene.render
    assert (render.resolution_x, render.resolution_y) == (4032, 3024)
    assert bpy.context.scene.camera.name == "s0"
    assert "differ in size" not in collection["recon_warnings"]
    mixed = [make_image(n, *CASES[n], seed=1) for n in ("portrait_fx_gt_fy", "landscape_4032x3024")]
    collection = import_result(SceneResult(images=mixed, backend="test"), ImportOptions(), "Mixed")
    assert (render.resolution_x, render.resolution_y) == (3024, 4032)
    assert render.pixel_aspect_y / render.pixel_aspect_x == pytest.approx(3300.0 / 3000.0)
    assert "differ in size" in collection["recon_warnings"]


def test_camera_names_are_truncated_and_unique(clean_data):
    long_name = "é" * 70  # 140 bytes in UTF-8
    ims = [make_image(long_name, *CASES["landscape_4032x3024"], seed=k) for k in range(2)]
    collection = import_result(SceneResult(images=ims, backend="test"), ImportOptions(), "Names")
    names = [o.name for o in collection.objects if o.type == "CAMERA"]
    assert len(set(names)) == 2
    assert all(n.startswith("é" * 29) for n in names)


@pytest.mark.parametrize(
    "case,fit", [("landscape_fy_gt_fx_cropped", "STRETCH"), ("portrait_square_pixels", "CROP")]
)
def test_background_photo_is_loaded(clean_data, tmp_path, case, fit):
    from PIL import Image

    im = make_image("photo", *CASES[case], seed=3)
    im.file = str(tmp_path / "photo.png")
    Image.fromarray(np.zeros(im.photo_size[::-1] + (3,), np.uint8)).save(im.file)
    collection = import_result(SceneResult(images=[im], backend="test"), ImportOptions(), "Bg")
    (camera,) = [o for o in collection.objects if o.type == "CAMERA"]
    (background,) = camera.data.background_images
    assert camera.data.show_background_images
    # Non-square pixels (fx != fy) need the photo stretched to the camera frame.
    assert background.frame_method == fit
    assert tuple(background.image.size) == im.photo_size


def _scene_with_confidence(seed=5):
    ims = [make_image(f"c{k}", *CASES["landscape_fy_gt_fx_cropped"], seed=seed + k) for k in range(2)]
    ims[0].pts3d_world[3, 4] = np.nan  # an unknown point is never imported
    return SceneResult(images=ims, backend="test", conf_threshold=3.0)


def _expected_count(result, threshold):
    return sum(
        int(((im.conf > threshold) & np.isfinite(im.pts3d_world).all(-1)).sum())
        for im in result.images
    )


def test_threshold_sets_point_count_and_attributes(clean_data):
    result = _scene_with_confidence()
    collection = import_result(result, ImportOptions(), "Thr")  # result's threshold: 3.0
    points = _points_object(collection)
    n = len(points.data.vertices)
    assert n == _expected_count(result, 3.0)
    masks = [(im.conf > 3.0) & np.isfinite(im.pts3d_world).all(-1) for im in result.images]
    conf = np.empty(n, np.float32)
    points.data.attributes["confidence"].data.foreach_get("value", conf)
    np.testing.assert_array_equal(conf, np.concatenate([im.conf[m] for im, m in zip(result.images, masks)]))
    colors = np.empty(n * 4, np.float32)
    points.data.attributes["Col"].data.foreach_get("color_srgb", colors)
    expected = np.concatenate([im.colors[m] for im, m in zip(result.images, masks)]) / 255.0
    np.testing.assert_allclose(colors.reshape(-1, 4)[:, :3], expected, atol=0.5 / 255)
    np.testing.assert_allclose(
        _mesh_positions(points),
        np.concatenate([im.pts3d_world[m] for im, m in zip(result.images, masks)]),
    )
    for threshold in (1.0, 7.5):
        (points,) = rebuild_geometry(collection, result, ImportOptions(conf_threshold=threshold))
        assert len(points.data.vertices) == _expected_count(result, threshold)
    assert len([o for o in collection.objects if o.type == "CAMERA"]) == 2
    assert len([o for o in collection.objects if o.get("recon_role") == "points"]) == 1


def test_points_radius_is_a_modifier_input(clean_data):
    result = _scene_with_confidence()
    points = _points_object(import_result(result, ImportOptions(point_radius=0.02), "Rad"))
    modifier = points.modifiers["Points"]
    (identifier,) = [i.identifier for i in modifier.node_group.interface.items_tree
                     if i.item_type == "SOCKET" and i.in_out == "INPUT" and i.name == "Radius"]
    assert modifier[identifier] == pytest.approx(0.02)
    evaluated = points.evaluated_get(bpy.context.evaluated_depsgraph_get())
    geometry_set = evaluated.evaluated_geometry()  # Blender 4.5+: what the modifier makes
    cloud = geometry_set.pointcloud
    radii = np.empty(len(cloud.points), np.float32)
    cloud.attributes["radius"].data.foreach_get("value", radii)
    assert len(radii) == _expected_count(result, 3.0)
    np.testing.assert_allclose(radii, 0.02)
    assert geometry_set.mesh is None or len(geometry_set.mesh.vertices) == 0  # no vertices left


def test_max_points_and_sky_mask(clean_data):
    result = _scene_with_confidence()
    result.images[1].colors[:10] = (100, 150, 230)  # blue sky band over the top rows
    collection = import_result(result, ImportOptions(max_points=100), "Max")
    assert len(_points_object(collection).data.vertices) == 100
    (points,) = rebuild_geometry(collection, result, ImportOptions(mask_sky=True))
    sky = [sky_mask(im.colors) for im in result.images]
    assert sky[1][:10].all() and not sky[0].any()
    expected = sum(
        int(((im.conf > 3.0) & np.isfinite(im.pts3d_world).all(-1) & ~s).sum())
        for im, s in zip(result.images, sky)
    )
    assert len(points.data.vertices) == expected


@pytest.mark.parametrize("native", [False, True])
def test_nothing_above_threshold_makes_no_empty_point_cloud(clean_data, native):
    result = _scene_with_confidence()
    collection = import_result(result, ImportOptions(conf_threshold=100.0, native_pointcloud=native), "E")
    assert not [o for o in collection.objects if o.type in ("MESH", "POINTCLOUD")]
    assert "No pixel is above the confidence threshold" in collection["recon_warnings"]


def test_native_point_cloud(clean_data):
    result = _scene_with_confidence()
    points = _points_object(import_result(result, ImportOptions(native_pointcloud=True, point_radius=0.03), "N"))
    assert points.type == "POINTCLOUD"
    cloud = points.data
    assert len(cloud.points) == _expected_count(result, 3.0)
    radii = np.empty(len(cloud.points), np.float32)
    cloud.attributes["radius"].data.foreach_get("value", radii)
    np.testing.assert_allclose(radii, 0.03)
    assert "Col" in cloud.attributes and "confidence" in cloud.attributes
    assert cloud.materials[0] is not None


def _step_image(mask_pixel=None):
    """A 24x30 map looking at two planes: depth 2 left of column 15, 3 from column 15 on."""
    depth = np.full((24, 30), 2.0)
    depth[:, 15:] = 3.0
    im = make_image("step", *CASES["landscape_fy_gt_fx_cropped"], seed=9, depth=depth)
    im.conf[:] = 5.0
    if mask_pixel is not None:
        im.conf[mask_pixel] = 0.0  # not above the default threshold 0
    return im


def _triangles(obj) -> np.ndarray:
    mesh = obj.data
    loops = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", loops)
    assert all(len(p.vertices) == 3 for p in mesh.polygons)
    return loops.reshape(-1, 3)


def test_mesh_drops_triangles_across_depth_jumps_and_masked_pixels(clean_data):
    h, w = 24, 30
    full = 2 * (h - 1) * (w - 1)
    im = _step_image()
    collection = import_result(SceneResult(images=[im], backend="test"), ImportOptions(output="MESH"), "M")
    (mesh,) = [o for o in collection.objects if o.get("recon_role") == "mesh"]
    tris = _triangles(mesh)
    assert len(tris) == full - 2 * (h - 1)  # the quad column straddling the step is gone
    pts = _mesh_positions(mesh)
    z = (pts - im.cam2world[:3, 3]) @ im.cam2world[:3, 2]  # camera depth of each vertex
    zt = z[tris]
    assert (zt.max(1) - zt.min(1) < 1e-4).all()  # no triangle spans the two planes
    # Every face looks at the camera (counter-clockwise winding seen from it).
    normals = np.cross(pts[tris[:, 1]] - pts[tris[:, 0]], pts[tris[:, 2]] - pts[tris[:, 0]])
    to_camera = im.cam2world[:3, 3] - pts[tris].mean(1)
    assert ((normals * to_camera).sum(1) > 0).all()
    # UVs put each vertex on its photo pixel.
    uv = np.empty(len(mesh.data.loops) * 2, np.float32)
    mesh.data.uv_layers["UVMap"].uv.foreach_get("vector", uv)
    uv = uv.reshape(-1, 2)
    first_loop_vertex = tris[0, 0]
    photo_xy = _project_pinhole(im, pts[first_loop_vertex])
    np.testing.assert_allclose(
        uv[0] * im.photo_size - [0.5, 0.5], [photo_xy[0], im.photo_size[1] - 1 - photo_xy[1]], atol=1e-3
    )
    # A masked interior pixel removes the six triangles around it.
    (mesh,) = rebuild_geometry(
        collection, SceneResult(images=[_step_image((5, 5))], backend="test"), ImportOptions(output="MESH")
    )
    assert len(_triangles(mesh)) == full - 2 * (h - 1) - 6


def _project_pinhole(im, p_world):
    """Photo pixel of a world point by the pinhole model in float64 (independent of Blender)."""
    p = np.linalg.inv(im.cam2world) @ np.append(p_world, 1.0)
    uvw = im.K_photo @ p[:3]
    return uvw[:2] / uvw[2]


def test_meshes_merged_or_per_image(clean_data):
    ims = [_step_image(), _step_image((3, 3))]
    result = SceneResult(images=ims, backend="test")
    collection = import_result(result, ImportOptions(output="BOTH"), "B")
    meshes = [o for o in collection.objects if o.get("recon_role") == "mesh"]
    assert len(meshes) == 1 and len(_points_object(collection).data.vertices) == 2 * 24 * 30 - 1
    merged = len(meshes[0].data.polygons)
    per_image = rebuild_geometry(collection, result, ImportOptions(output="MESH", merge_meshes=False))
    assert sorted(o.name for o in per_image) == ["step mesh", "step mesh.001"]
    assert sum(len(o.data.polygons) for o in per_image) == merged


def test_failure_leaves_nothing_behind(clean_data):
    good = _step_image()
    broken = _step_image()
    broken.cam2world = np.zeros((4, 4))  # cameras and points build; the mesh step then fails
    result = SceneResult(images=[good, broken], backend="test")
    scene = bpy.context.scene
    resolution = (scene.render.resolution_x, scene.render.resolution_y)
    with pytest.raises(np.linalg.LinAlgError):
        import_result(result, ImportOptions(output="BOTH", point_radius=0.01), "Broken")
    assert _new_blocks(clean_data) == []
    assert (scene.render.resolution_x, scene.render.resolution_y) == resolution
    collection = import_result(SceneResult(images=[good], backend="test"), ImportOptions(), "Ok")
    before = {o.name for o in collection.objects}
    with pytest.raises(np.linalg.LinAlgError):
        rebuild_geometry(collection, result, ImportOptions(output="MESH"))
    assert {o.name for o in collection.objects} == before  # the old geometry is kept


def test_bad_input_is_refused(clean_data):
    with pytest.raises(InputError, match="output"):
        ImportOptions(output="VOXELS")
    with pytest.raises(InputError, match="no registered photo"):
        import_result(SceneResult(images=[], backend="test"), ImportOptions(), "Empty")
    assert _new_blocks(clean_data) == []


def test_depth_and_confidence_images(clean_data):
    result = _scene_with_confidence()
    result.images[0].pts3d_world[3, 4] = 1.0  # keep depth finite for this check
    maps = build_map_images(result)
    depth_img, conf_img = maps[1]
    im = result.images[1]
    h, w = im.conf.shape
    assert tuple(depth_img.size) == (w, h) and depth_img.packed_file is not None
    pixels = np.empty(w * h * 4, np.float32)
    depth_img.pixels.foreach_get(pixels)
    grey = pixels.reshape(h, w, 4)[::-1, :, 0]
    # Independent route: depth = distance along the optical axis, normalised by the scene max.
    depths = [
        (im2.pts3d_world.reshape(-1, 3) - im2.cam2world[:3, 3]) @ im2.cam2world[:3, 2]
        for im2 in result.images
    ]
    max_depth = max(np.nanmax(d) for d in depths)
    np.testing.assert_allclose(grey, depths[1].reshape(h, w) / max_depth, atol=1.0 / 255)
    conf_img.pixels.foreach_get(pixels)
    rgb = pixels.reshape(h, w, 4)[::-1, :, :3]
    np.testing.assert_allclose(rgb, jet(im.conf / max(i.conf.max() for i in result.images)), atol=1.0 / 255)


def test_jet_ramp_anchors():
    np.testing.assert_allclose(jet(np.array([0.0, 0.5, 1.0])), [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]])
    hue_order = np.argmax(jet(np.linspace(0, 1, 9)), axis=1)
    assert (np.diff(hue_order) <= 0).all()  # blue (2) -> green (1) -> red (0)


def test_sparse_points_are_a_second_cloud(clean_data):
    result = _scene_with_confidence()
    rng = np.random.default_rng(2)
    result.sparse_points = rng.normal(size=(50, 3)).astype(np.float32)
    result.sparse_colors = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    collection = import_result(result, ImportOptions(conf_threshold=100.0), "Sparse")
    (sparse,) = [o for o in collection.objects if o.type in ("MESH", "POINTCLOUD")]
    assert sparse.get("recon_role") == "sparse"
    np.testing.assert_allclose(_mesh_positions(sparse), result.sparse_points)
    colors = np.empty(50 * 4, np.float32)
    sparse.data.attributes["Col"].data.foreach_get("color_srgb", colors)
    np.testing.assert_allclose(colors.reshape(-1, 4)[:, :3], result.sparse_colors / 255.0, atol=0.5 / 255)
    objects = rebuild_geometry(collection, result, ImportOptions(sparse_points=False))
    assert [o.get("recon_role") for o in objects] == ["points"]


@pytest.mark.parametrize("cancel_at", ["point cloud", "mesh"])
def test_cancel_while_building_removes_everything(clean_data, cancel_at):
    from photo_recon.core.errors import Cancelled
    from photo_recon.core.progress import CancelToken, Progress

    token = CancelToken()
    stages = []

    def on_progress(stage, fraction, message):
        stages.append(message)
        if message == cancel_at:
            token.cancel()  # as the user pressing Esc while this step is reported

    with pytest.raises(Cancelled):
        import_result(_scene_with_confidence(), ImportOptions(output="BOTH"), "Cancel",
                      progress=Progress(on_progress, token))
    assert stages[0] == "cameras" and stages[-1] == cancel_at
    assert _new_blocks(clean_data) == []


def test_native_point_cloud_falls_back_outside_the_active_scene(clean_data):
    # Blender's convert operator works on the context's view layer only.
    other = bpy.data.scenes.new("other scene")
    try:
        collection = import_result(_scene_with_confidence(), ImportOptions(native_pointcloud=True),
                                   "Other", scene=other)
        points = _points_object(collection)
        assert points.type == "MESH" and points.modifiers["Points"].node_group is not None
        assert len(points.data.vertices) == _expected_count(_scene_with_confidence(), 3.0)
        assert "used a mesh instead" in collection["recon_warnings"]
    finally:
        bpy.data.scenes.remove(other)


def test_photo_textured_meshes(clean_data, tmp_path):
    from PIL import Image

    ims = [_step_image(), _step_image((3, 3)), _step_image()]
    for k, im in enumerate(ims[:2]):
        im.file = str(tmp_path / f"photo{k}.png")
        Image.fromarray(np.zeros(im.photo_size[::-1] + (3,), np.uint8)).save(im.file)
    result = SceneResult(images=ims, backend="test")  # the third photo's file is missing
    collection = import_result(result, ImportOptions(output="MESH", mesh_texture=True), "Tex")
    (mesh,) = [o for o in collection.objects if o.get("recon_role") == "mesh"]
    slots = [m.name for m in mesh.data.materials]
    assert slots == ["photo0 photo", "photo1 photo", "Tex colour"]
    textures = [n.image for m in mesh.data.materials[:2] for n in m.node_tree.nodes if n.type == "TEX_IMAGE"]
    assert [bpy.path.abspath(t.filepath) for t in textures] == [ims[0].file, ims[1].file]
    cameras = [o for o in collection.objects if o.type == "CAMERA"]
    assert cameras[0].data.background_images[0].image == textures[0]  # one image data-block
    index = np.empty(len(mesh.data.polygons), np.int32)
    mesh.data.polygons.foreach_get("material_index", index)
    per_image = 2 * 23 * 29 - 2 * 23  # full grid less the quad column across the depth step
    np.testing.assert_array_equal(np.bincount(index), [per_image, per_image - 6, per_image])
    assert "Its mesh shows the point colours instead" in collection["recon_warnings"]
    separate = rebuild_geometry(collection, result,
                                ImportOptions(output="MESH", mesh_texture=True, merge_meshes=False))
    assert [len(o.data.materials) for o in separate] == [1, 1, 1]

"""Render the imported geometry through the recovered camera with Cycles (CPU) and compare with
the photo it came from.

The scene is built so the truth is known: every photo pixel sees one world point (a tilted wall
with a box in front of it), coloured with that pixel's colour, seen by a camera with an
off-centre principal point and fx != fy. A render through the imported camera must then give the
photo back. The renderer samples pixel centres only (filter width 0.01 px) and the geometry is
unlit, so a correct import reproduces each pixel's colour and a camera off by a fraction of a
pixel misses the points (the sign-flipped shift check shows the measure can fail). A mesh's
boundary (image border, the box outline where triangles are dropped) runs exactly through pixel
centres, where a ray may hit or miss; for meshes the comparison leaves out pixels next to it.

Bar: PSNR >= 30 dB (8-bit). Measured 47.5 dB (points, Geometry Nodes and native), 57.2 dB
(mesh with vertex colours) and 63.6 dB (mesh textured with the photo through its UVs; its vertex
colours are black in that case), both meshes away from their boundary, in bpy 4.5.15 and 5.0.1.
"""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import load_addon

load_addon()
from photo_recon.core.result import ImageResult, SceneResult  # noqa: E402
from photo_recon.operators.builders import ImportOptions, import_result  # noqa: E402

WIDTH, HEIGHT = 160, 120
K_PHOTO = np.array([[150.0, 0.0, 86.0], [0.0, 138.0, 54.5], [0.0, 0.0, 1.0]])
PSNR_BAR_DB = 30.0


def _photo() -> np.ndarray:
    """``(120, 160, 3)`` uint8: smooth colour ramps with a checker of sharp edges."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    r = 128 + 110 * np.sin(u / 9.0)
    g = 128 + 110 * np.cos(v / 7.0 + u / 23.0)
    b = np.where(((u // 16) + (v // 16)) % 2 == 0, 230.0, 30.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def _depth() -> np.ndarray:
    """A wall tilted from 3.0 to 3.6 with a box at depth 2.5 in front of it."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    depth = 3.0 + 0.6 * u / WIDTH + 0.2 * v / HEIGHT
    depth[40:90, 50:100] = 2.5
    return depth


def _scene_result(photo_path: str) -> SceneResult:
    photo = _photo()
    Image.fromarray(photo).save(photo_path)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    depth = _depth()
    pts_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K_PHOTO).T * depth[..., None]
    angle = 0.4
    cam2world = np.eye(4)
    cam2world[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    cam2world[:3, 3] = [0.5, -0.2, 1.0]
    pts_world = pts_cam @ cam2world[:3, :3].T + cam2world[:3, 3]
    image = ImageResult(
        file=photo_path,
        photo_size=(WIDTH, HEIGHT),
        K=K_PHOTO,
        cam2world=cam2world,
        photo_from_map=np.eye(3),
        pts3d_world=pts_world.astype(np.float32),
        conf=np.full((HEIGHT, WIDTH), 5.0, np.float32),
        colors=photo,
        depth=depth.astype(np.float32),
    )
    return SceneResult(images=[image], backend="test")


@pytest.fixture
def render_scene():
    """A fresh scene (no default cube or light), made the context's scene for the test."""
    scene = bpy.data.scenes.new("render test")
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 2
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.filter_width = 0.01  # sample pixel centres: no anti-aliasing blur
    scene.render.dither_intensity = 0.0
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.world = None  # black background, no light: only the unlit point colours show
    with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
        yield scene
    for obj in list(scene.collection.all_objects):
        bpy.data.objects.remove(obj)
    for collection in list(scene.collection.children_recursive):
        bpy.data.collections.remove(collection)
    bpy.data.scenes.remove(scene)


def _render(scene, path) -> np.ndarray:
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    return np.asarray(Image.open(path).convert("RGB"))


def _away_from_depth_edges() -> np.ndarray:
    """``(H, W)`` bool: pixels whose 3x3 neighbourhood is inside the image and has no depth step."""
    depth = _depth()
    step = ndimage.maximum_filter(depth, 3) - ndimage.minimum_filter(depth, 3) > 0.1
    inside = np.zeros_like(step)
    inside[1:-1, 1:-1] = True
    return inside & ~step


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    if where is not None:
        a, b = a[where], b[where]
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize(
    "options",
    [
        ImportOptions(output="POINTS"),
        ImportOptions(output="POINTS", native_pointcloud=True),
        ImportOptions(output="MESH"),
        ImportOptions(output="MESH", mesh_texture=True),
    ],
    ids=["gn_points", "native_points", "mesh", "photo_textured_mesh"],
)
def test_render_through_recovered_camera_gives_the_photo(render_scene, tmp_path, options):
    result = _scene_result(str(tmp_path / "photo.png"))
    if options.mesh_texture:
        result.images[0].colors[:] = 0  # only the photo texture (through the UVs) can show it
    # Point spheres smaller than one pixel everywhere, so each pixel centre sees its own point.
    radius = 0.45 * _depth().min() / K_PHOTO[0, 0]
    import_result(result, ImportOptions(**{**options.__dict__, "point_radius": radius}), "Render",
                  scene=render_scene)
    assert (render_scene.render.resolution_x, render_scene.render.resolution_y) == (WIDTH, HEIGHT)
    rendered = _render(render_scene, tmp_path / "render.png")
    where = _away_from_depth_edges() if options.output == "MESH" else None
    psnr = _psnr(rendered, _photo(), where)
    assert psnr >= PSNR_BAR_DB, f"PSNR {psnr:.1f} dB"
    if options.output == "POINTS" and not options.native_pointcloud:
        # The same render with the lens shift sign flipped (a classic mistake) must fail the bar.
        camera = render_scene.camera.data
        camera.shift_x, camera.shift_y = -camera.shift_x, -camera.shift_y
        wrong = _psnr(_render(render_scene, tmp_path / "wrong.png"), _photo())
        assert wrong < PSNR_BAR_DB - 10, f"flipped shift still gives {wrong:.1f} dB"

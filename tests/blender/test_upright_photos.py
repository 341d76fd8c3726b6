"""Phone photos stored sideways (EXIF orientation 6 or 8) appear upright in Blender: camera
backgrounds, mesh textures, image planes and the animated camera's footage all show the worker's
upright copy, whose pixels are the EXIF-oriented photo (real bpy; Blender itself ignores EXIF)."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import load_addon, registered_addon

load_addon()
from photo_recon.core.images import write_upright_copies  # noqa: E402
from photo_recon.core.result import ImageResult, SceneResult  # noqa: E402
from photo_recon.core.synthetic import look_at_cam2world  # noqa: E402
from photo_recon.operators.apply import apply_result  # noqa: E402
from photo_recon.operators.builders import ImportOptions, import_result  # noqa: E402

pytestmark = pytest.mark.usefixtures("clean_data")

W, H = 32, 24
"""Size of every photo as displayed (EXIF-oriented): landscape."""
K_PHOTO = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
PHOTOS = (("turned6.png", 6), ("turned8.png", 8), ("upright.png", None))
"""File name and EXIF orientation; the turned ones are stored as H x W portraits."""


@pytest.fixture(scope="module", autouse=True)
def registered():
    with registered_addon():
        yield


def oriented(path: str) -> np.ndarray:
    """``(H, W, 3)`` uint8: the photo as Pillow's EXIF orientation shows it."""
    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def blender_pixels(image: bpy.types.Image) -> np.ndarray:
    """``(H, W, 3)`` uint8 of a Blender image, top row first (Blender stores bottom row first)."""
    w, h = image.size
    flat = np.empty(w * h * image.channels, np.float32)
    image.pixels.foreach_get(flat)
    rows = flat.reshape(h, w, image.channels)[::-1, :, :3]
    return np.round(rows * 255).astype(np.uint8)


def turned_scene(tmp_path: Path) -> tuple[SceneResult, Path]:
    """Three cameras on an arc, each seeing its photo's pixels 3 units away; photos 0 and 1 are
    stored sideways. The upright copies are written as the worker writes them, then the result
    is saved."""
    folder, result_dir = tmp_path / "photos", tmp_path / "job" / "result"
    folder.mkdir()
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K_PHOTO).T
    images = []
    for k, (name, orientation) in enumerate(PHOTOS):
        colors = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        exif = Image.Exif()
        stored = Image.fromarray(colors)
        if orientation is not None:
            # Store the pixels so that applying the EXIF orientation gives ``colors`` back.
            exif[0x0112] = orientation
            undo = Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
            stored = stored.transpose(undo)
        stored.save(folder / name, exif=exif)
        angle = 0.4 * k
        c2w = look_at_cam2world(np.array([3 * np.sin(angle), -3 * np.cos(angle), 1.0]), np.zeros(3))
        pts = (rays * 3.0) @ c2w[:3, :3].T + c2w[:3, 3]
        images.append(ImageResult(
            file=str(folder / name), photo_size=(W, H), K=K_PHOTO, cam2world=c2w,
            photo_from_map=np.eye(3), pts3d_world=pts.astype(np.float32),
            conf=np.full((H, W), 5.0, np.float32), colors=colors,
        ))
    result = SceneResult(images=images, backend="test", conf_kind="synthetic", conf_threshold=1.0)
    write_upright_copies(result.images, result_dir)
    result.save(result_dir)
    return SceneResult.load(result_dir), result_dir


def _cameras(collection) -> list[bpy.types.Object]:
    return sorted((o for o in collection.objects if o.get("recon_role") == "camera"),
                  key=lambda o: o["recon_index"])


def _texture(material) -> bpy.types.Image:
    (node,) = [n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"]
    return node.image


def test_backgrounds_and_mesh_textures_show_the_oriented_photo(tmp_path):
    result, _ = turned_scene(tmp_path)
    assert [im.display_file is not None for im in result.images] == [True, True, False]
    options = ImportOptions(output="MESH", mesh_texture=True, merge_meshes=False)
    collection = import_result(result, options, "Upright")
    meshes = sorted((o for o in collection.objects if o.get("recon_role") == "mesh"),
                    key=lambda o: o.name)
    for camera, mesh, im in zip(_cameras(collection), meshes, result.images):
        (background,) = camera.data.background_images
        photo = background.image
        assert Path(bpy.path.abspath(photo.filepath)) == Path(im.upright_file)
        # The oriented (landscape) size: the frame and the photo agree, nothing is cropped.
        assert tuple(photo.size) == (W, H) == tuple(camera.data["recon_resolution"])
        np.testing.assert_array_equal(blender_pixels(photo), oriented(im.file))
        np.testing.assert_array_equal(blender_pixels(photo), im.colors)
        assert _texture(mesh.data.materials[0]) == photo  # the mesh's UVs (K_photo) read the same


def test_image_planes_and_animated_camera_use_the_upright_copies(tmp_path):
    result, result_dir = turned_scene(tmp_path)
    collection = apply_result(bpy.context, result, result_dir, str(tmp_path / "photos"))
    for camera in _cameras(collection):  # planes must then load the photo themselves
        camera.data.background_images.clear()
    assert bpy.ops.recon.image_planes(depth=1.0) == {"FINISHED"}
    for camera, im in zip(_cameras(collection), result.images):
        (plane,) = [c for c in camera.children if c.get("recon_role") == "image_plane"]
        photo = _texture(plane.data.materials[0])
        assert Path(bpy.path.abspath(photo.filepath)) == Path(im.upright_file)
        np.testing.assert_array_equal(blender_pixels(photo), oriented(im.file))

    assert bpy.ops.recon.animated_camera(frame_start=1, order="INPUT") == {"FINISHED"}
    (animated,) = [o for o in collection.objects if o.get("recon_role") == "animated_camera"]
    footage = animated.data.background_images[0].image
    assert footage.source == "SEQUENCE"
    # The frames are links (or copies) in the result folder; each frame's stored pixels are the
    # oriented photo (what Blender plays).
    first = Path(bpy.path.abspath(footage.filepath))
    frames = sorted(first.parent.iterdir())
    assert len(frames) == len(result.images)
    for frame, im in zip(frames, result.images):
        with Image.open(frame) as stored:
            np.testing.assert_array_equal(np.asarray(stored.convert("RGB")), im.colors)

    # Scaling saves the moved result as a new folder beside it: it keeps the upright copies.
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    for camera in _cameras(collection)[:2]:
        camera.select_set(True)
    assert bpy.ops.recon.set_scale(mode="CAMERAS", distance=10.0) == {"FINISHED"}
    edited_dir = Path(bpy.context.scene.recon.last_result_dir)
    assert edited_dir != result_dir and edited_dir.parent == result_dir.parent
    edited = SceneResult.load(edited_dir)
    assert [im.display_file for im in edited.images] == [im.display_file for im in result.images]

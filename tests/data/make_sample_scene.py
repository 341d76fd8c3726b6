"""Render the bundled sample scene with Blender and save its exact cameras.

Usage (the project's venv, the real ``bpy`` module; about 2-4 minutes on 2 CPU cores)::

    python tests/data/make_sample_scene.py [--out tests/data/sample_scene] [--samples 16]

Writes ``images/view_XX.jpg`` (640x480, JPEG quality 90) and ``gt.json`` in the format of
``../shared/scenes/*/gt.json`` (OpenCV camera axes, ``x_cam = R_w2c @ X_world + t_w2c``, pixel
centre of the top-left pixel at (0, 0)). The cameras are read back from Blender's camera objects
and converted with ``core.geometry.conventions``; a self-check then renders small emissive
markers at known world points, finds them in the renders, and compares their positions with the
projection through the saved ``K``, ``R_w2c``, ``t_w2c`` (the result is stored under
``self_check`` in ``gt.json``; the script fails if any marker is off by more than 0.5 px).

The scene (z up, Blender units): a 50x50 floor with a colourful procedural texture (Voronoi cells,
noise, checker) and five diffuse objects with their own rich textures, lit by a sun and a grey
sky. Diffuse materials only (no reflections or transparency) and texture everywhere, so SIFT
finds many features. Cameras: 16 views on a ring around the objects, at slightly varying radius
and height, looking at the scene centre, lens 35 mm on a 36 mm sensor (fx = fy = 622.2 px).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from core.geometry.conventions import cam2world_blender_to_opencv, intrinsics_from_blender_camera  # noqa: E402

log = logging.getLogger("make_sample_scene")

WIDTH, HEIGHT = 640, 480
N_VIEWS = 16
LENS_MM, SENSOR_MM = 35.0, 36.0
LOOK_AT = (0.0, 0.0, 0.5)
JPEG_QUALITY = 90
MARKERS = [(0.9, -0.2, 1.3), (-1.0, 0.9, 0.0), (0.3, 1.6, 0.9), (-0.6, -1.4, 0.35)]
"""World points checked by the self-check (on or near the objects and the floor)."""
MARKER_RADIUS = 0.012
MAX_MARKER_ERROR_PX = 0.5


def _node(tree, kind, **inputs):
    node = tree.nodes.new(kind)
    for name, value in inputs.items():
        node.inputs[name].default_value = value
    return node


def _material(name: str, build) -> bpy.types.Material:
    """A diffuse material whose colour ``build(tree, coords)`` makes from object coordinates."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    tree = mat.node_tree
    tree.nodes.clear()
    coords = tree.nodes.new("ShaderNodeTexCoord").outputs["Object"]
    bsdf = _node(tree, "ShaderNodeBsdfDiffuse", Roughness=1.0)
    out = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(build(tree, coords), bsdf.inputs["Color"])
    tree.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


def _mix(tree, a, b, blend="MULTIPLY", factor=0.7):
    mix = tree.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.blend_type = blend
    mix.inputs["Factor"].default_value = factor
    tree.links.new(a, mix.inputs[6])  # A (colour)
    tree.links.new(b, mix.inputs[7])  # B (colour)
    return mix.outputs[2]  # Result (colour)


def _floor_colour(tree, coords):
    voronoi = _node(tree, "ShaderNodeTexVoronoi", Scale=2.5)
    tree.links.new(coords, voronoi.inputs["Vector"])
    # Fine, high-contrast noise so that no cell is flat (dense matching needs texture everywhere).
    noise = _node(tree, "ShaderNodeTexNoise", Scale=30.0, Detail=15.0, Distortion=0.8)
    tree.links.new(coords, noise.inputs["Vector"])
    checker = _node(tree, "ShaderNodeTexChecker", Scale=1.0)
    checker.inputs["Color1"].default_value = (0.9, 0.85, 0.7, 1)
    checker.inputs["Color2"].default_value = (0.25, 0.3, 0.4, 1)
    tree.links.new(coords, checker.inputs["Vector"])
    cells = _mix(tree, voronoi.outputs["Color"], noise.outputs["Color"], "OVERLAY", 0.9)
    return _mix(tree, cells, checker.outputs["Color"], "MULTIPLY", 0.6)


def _brick_colour(tree, coords):
    brick = _node(tree, "ShaderNodeTexBrick", Scale=4.0)
    brick.inputs["Color1"].default_value = (0.8, 0.25, 0.1, 1)
    brick.inputs["Color2"].default_value = (0.95, 0.75, 0.3, 1)
    tree.links.new(coords, brick.inputs["Vector"])
    noise = _node(tree, "ShaderNodeTexNoise", Scale=12.0, Detail=8.0)
    tree.links.new(coords, noise.inputs["Vector"])
    return _mix(tree, brick.outputs["Color"], noise.outputs["Color"], "OVERLAY", 0.5)


def _magic_colour(tree, coords):
    magic = _node(tree, "ShaderNodeTexMagic", Scale=3.0, Distortion=2.0)
    magic.turbulence_depth = 4
    tree.links.new(coords, magic.inputs["Vector"])
    noise = _node(tree, "ShaderNodeTexNoise", Scale=15.0, Detail=6.0)
    tree.links.new(coords, noise.inputs["Vector"])
    return _mix(tree, magic.outputs["Color"], noise.outputs["Color"], "MULTIPLY", 0.4)


def _wave_colour(tree, coords):
    wave = _node(tree, "ShaderNodeTexWave", Scale=3.0, Distortion=6.0, Detail=6.0)
    tree.links.new(coords, wave.inputs["Vector"])
    ramp = tree.nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (0.05, 0.2, 0.6, 1)
    ramp.color_ramp.elements[1].color = (0.95, 0.9, 0.2, 1)
    tree.links.new(wave.outputs["Fac"], ramp.inputs["Fac"])
    voronoi = _node(tree, "ShaderNodeTexVoronoi", Scale=9.0)
    tree.links.new(coords, voronoi.inputs["Vector"])
    return _mix(tree, ramp.outputs["Color"], voronoi.outputs["Color"], "OVERLAY", 0.5)


def _cells_colour(tree, coords):
    voronoi = _node(tree, "ShaderNodeTexVoronoi", Scale=6.0)
    tree.links.new(coords, voronoi.inputs["Vector"])
    checker = _node(tree, "ShaderNodeTexChecker", Scale=8.0)
    checker.inputs["Color1"].default_value = (0.1, 0.6, 0.3, 1)
    checker.inputs["Color2"].default_value = (0.9, 0.9, 0.95, 1)
    tree.links.new(coords, checker.inputs["Vector"])
    return _mix(tree, voronoi.outputs["Color"], checker.outputs["Color"], "MULTIPLY", 0.5)


def _add(op, material, **kwargs) -> bpy.types.Object:
    op(**kwargs)
    obj = bpy.context.active_object
    obj.data.materials.append(material)
    return obj


def build_scene() -> None:
    """Floor, five textured objects, sun and sky; Cycles on the CPU with a standard view."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    mesh = bpy.ops.mesh
    _add(mesh.primitive_plane_add, _material("floor", _floor_colour), size=50.0)
    _add(mesh.primitive_cube_add, _material("bricks", _brick_colour), size=1.2, location=(0.9, -0.2, 0.6),
         rotation=(0, 0, 0.4))
    sphere = _add(mesh.primitive_uv_sphere_add, _material("magic", _magic_colour), radius=0.6,
                  location=(-1.0, -0.9, 0.6), segments=64, ring_count=32)
    bpy.context.view_layer.objects.active = sphere
    bpy.ops.object.shade_smooth()
    _add(mesh.primitive_cylinder_add, _material("waves", _wave_colour), radius=0.4, depth=1.6,
         location=(0.3, 1.2, 0.8), vertices=64)
    _add(mesh.primitive_monkey_add, _material("cells", _cells_colour), size=1.0, location=(-1.2, 0.9, 0.55),
         rotation=(0.3, 0, -0.8))
    _add(mesh.primitive_torus_add, _material("bricks2", _brick_colour), major_radius=0.5, minor_radius=0.18,
         location=(1.6, 1.4, 0.18))

    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.55, 0.62, 0.75, 1)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.8
    scene.world = world

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False
    scene.cycles.max_bounces = 2
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"


def camera_centres() -> list[tuple[float, float, float]]:
    """World positions of the ``N_VIEWS`` cameras: a ring of radius 5.6-6.4 at height 3.6-4.4
    (varying, so the views are not all in one plane)."""
    centres = []
    for k in range(N_VIEWS):
        angle = 2 * math.pi * k / N_VIEWS
        radius = 6.0 + 0.4 * math.sin(3 * angle)
        height = 4.0 + 0.4 * math.cos(2 * angle)
        centres.append((radius * math.cos(angle), radius * math.sin(angle), height))
    return centres


def add_cameras() -> list[bpy.types.Object]:
    """Cameras at :func:`camera_centres` looking at ``LOOK_AT``, image x axis level."""
    scene = bpy.context.scene
    cameras = []
    for k, centre in enumerate(camera_centres()):
        data = bpy.data.cameras.new(f"view_{k:02d}")
        data.lens, data.sensor_width, data.sensor_fit = LENS_MM, SENSOR_MM, "HORIZONTAL"
        obj = bpy.data.objects.new(f"view_{k:02d}", data)
        obj.location = centre
        direction = Vector(LOOK_AT) - obj.location
        obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
        scene.collection.objects.link(obj)
        cameras.append(obj)
    bpy.context.view_layer.update()
    return cameras


def camera_gt(obj: bpy.types.Object) -> dict:
    """A ``gt.json`` frame (without ``file``) read back from a Blender camera object."""
    scene, cam = bpy.context.scene, obj.data
    K = intrinsics_from_blender_camera(
        cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit, cam.shift_x, cam.shift_y,
        scene.render.resolution_x, scene.render.resolution_y,
        scene.render.pixel_aspect_x, scene.render.pixel_aspect_y,
    )
    cam2world = cam2world_blender_to_opencv(np.array(obj.matrix_world))
    R_w2c = cam2world[:3, :3].T
    t_w2c = -R_w2c @ cam2world[:3, 3]
    return {
        "width": scene.render.resolution_x, "height": scene.render.resolution_y,
        "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
        "R_w2c": R_w2c.tolist(), "t_w2c": t_w2c.tolist(),
    }


def object_bbox() -> list[list[float]]:
    """Axis-aligned world bbox of the objects on the floor (their parts below it are hidden)."""
    points = np.concatenate([
        np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
        for obj in bpy.context.scene.objects if obj.type == "MESH" and obj.name != "Plane"
    ])
    lo, hi = points.min(axis=0), points.max(axis=0)
    lo[2] = max(lo[2], 0.0)
    return [np.round(lo, 3).tolist(), np.round(hi, 3).tolist()]


def render(camera: bpy.types.Object, path: Path, samples: int) -> None:
    scene = bpy.context.scene
    scene.camera = camera
    scene.cycles.samples = samples
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def project(frame: dict, X_world: np.ndarray) -> np.ndarray:
    """``(2,)`` pixel of a world point through a gt.json frame (our pixel-centre convention)."""
    x = np.asarray(frame["R_w2c"]) @ X_world + np.asarray(frame["t_w2c"])
    return np.array([frame["fx"] * x[0] / x[2] + frame["cx"], frame["fy"] * x[1] / x[2] + frame["cy"]])


def self_check(cameras, frames, tmp: Path) -> dict:
    """Render each marker alone (emissive sphere, black world, everything else hidden) through a
    few cameras and compare the intensity centroid with the projection through the saved GT."""
    scene = bpy.context.scene
    for obj in scene.objects:
        obj.hide_render = obj.type != "CAMERA"
    scene.world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.0
    scene.render.dither_intensity = 0.0  # dithering would light every pixel a little
    glow = bpy.data.materials.new("marker")
    glow.use_nodes = True
    glow.node_tree.nodes.clear()
    emission = _node(glow.node_tree, "ShaderNodeEmission", Strength=20.0)
    out = glow.node_tree.nodes.new("ShaderNodeOutputMaterial")
    glow.node_tree.links.new(emission.outputs["Emission"], out.inputs["Surface"])
    errors = []
    for m, point in enumerate(MARKERS):
        marker = _add(bpy.ops.mesh.primitive_uv_sphere_add, glow, radius=MARKER_RADIUS, location=point)
        for k in range(0, N_VIEWS, 5):
            render(cameras[k], tmp / f"marker{m}_{k}.png", samples=32)
            lum = np.asarray(Image.open(tmp / f"marker{m}_{k}.png").convert("RGB"), np.float64).sum(axis=-1)
            if lum.max() == 0:
                continue  # hidden behind the image border
            v, u = np.nonzero(lum > 0)
            w = lum[v, u]
            found = np.array([(u * w).sum() / w.sum(), (v * w).sum() / w.sum()])
            expected = project(frames[k], np.array(point))
            errors.append({"marker": m, "view": k, "found": found.tolist(), "expected": expected.tolist(),
                           "error_px": float(np.linalg.norm(found - expected))})
        bpy.data.objects.remove(marker)
    worst = max(e["error_px"] for e in errors)
    log.info("self-check: %d marker renders, worst error %.3f px", len(errors), worst)
    return {"markers_world": MARKERS, "checks": errors, "max_error_px": worst}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sample_scene")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--check-only", action="store_true",
                        help="keep the images and cameras in --out; only redo the self-check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gt_path = args.out / "gt.json"
    build_scene()
    cameras = add_cameras()
    with tempfile.TemporaryDirectory() as tmp:
        if args.check_only:
            gt = json.loads(gt_path.read_text())
            frames = gt["frames"]
        else:
            frames = render_views(cameras, args.out, args.samples, Path(tmp))
            gt = gt_document(frames, args.samples)
        gt["object_bbox_world"] = object_bbox()
        gt["self_check"] = self_check(cameras, frames, Path(tmp))
    gt_path.write_text(json.dumps(gt, indent=1))
    worst = gt["self_check"]["max_error_px"]
    if worst > MAX_MARKER_ERROR_PX:
        log.error("self-check failed: a marker is %.3f px from its projection", worst)
        return 1
    return 0


def render_views(cameras, out: Path, samples: int, tmp: Path) -> list[dict]:
    """Render every camera to ``out/images/view_XX.jpg``; return the gt.json frames."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for k, camera in enumerate(cameras):
        png = tmp / f"view_{k:02d}.png"
        render(camera, png, samples)
        name = f"images/view_{k:02d}.jpg"
        Image.open(png).convert("RGB").save(out / name, quality=JPEG_QUALITY)
        frames.append({"file": name, **camera_gt(camera)})
        log.info("rendered %s", name)
    return frames


def gt_document(frames: list[dict], samples: int) -> dict:
    """The gt.json content (format of ``../shared/scenes/*/gt.json``) without the self-check."""
    return {
        "scene": "sample_scene",
        "source_repo": "this project (tests/data/make_sample_scene.py)",
        "license": "same as the project (our own render)",
        "gt_kind": "exact (synthetic Blender render): poses and intrinsics read from the Blender cameras",
        "units": "Blender units (objects ~3.5 units across; cameras at radius ~6, height ~4)",
        "pixel_convention": "OpenCV (centre of the top-left pixel = (0,0)); principal point = ((W-1)/2,(H-1)/2)",
        "notes": f"Cycles CPU, {samples} samples, no denoising, {WIDTH}x{HEIGHT}, JPEG quality "
                 f"{JPEG_QUALITY}. {N_VIEWS} views on a ring around a procedurally textured scene; "
                 "diffuse materials only.",
        "format": "x_cam = R_w2c @ X_world + t_w2c; OpenCV camera axes (x right, y down, z forward); "
                  "pixel u = fx*x/z + cx, v = fy*y/z + cy with the centre of the top-left pixel at (0,0); "
                  "no lens distortion",
        "num_images": len(frames),
        "frames": frames,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

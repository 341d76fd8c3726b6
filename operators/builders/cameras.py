"""Camera objects for the registered photos: intrinsics, pose, background photo, render size."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from ...core.errors import ReconstructionFailed
from ...core.geometry.conventions import blender_camera_params, cam2world_opencv_to_blender
from ...core.result import ImageResult, SceneResult
from .datablocks import CreatedData, id_name, load_photo

# Pixel aspects closer than this count as the same (they come from float focal lengths).
_ASPECT_TOLERANCE = 1e-6


def camera_settings(image: ImageResult) -> dict[str, float | str | int]:
    """Blender camera and render settings reproducing ``image``'s photo intrinsics exactly.

    The keys of :func:`~core.geometry.conventions.blender_camera_params` plus ``resolution_x``
    and ``resolution_y`` (the original photo's size; the camera is set up for the full photo,
    not the network's map grid).

    Raises:
        ReconstructionFailed: the intrinsics or photo size cannot make a camera (a focal length
            that is not positive and finite), naming the photo.
    """
    width, height = (int(v) for v in image.photo_size)
    K_photo = image.K_photo
    fx, fy = K_photo[0, 0], K_photo[1, 1]
    if not (np.isfinite(K_photo).all() and fx > 0 and fy > 0 and width > 0 and height > 0):
        raise ReconstructionFailed(
            f"The result gives {Path(image.file).name} invalid intrinsics (fx={fx:g}, "
            f"fy={fy:g} px, photo {width}x{height}), which no Blender camera can have. "
            "Reconstruct again, giving its focal length (known_focals) or leaving the photo out.")
    params = blender_camera_params(K_photo, width, height)
    params.update(resolution_x=width, resolution_y=height)
    return params


def scene_scale(result: SceneResult) -> float:
    """A length typical of the scene: the median distance between camera centres, or for a
    single camera the median distance of its points (> 0; 1.0 if nothing is known)."""
    centres = np.array([im.cam2world[:3, 3] for im in result.images])
    if len(centres) > 1:
        dists = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        dists = dists[np.triu_indices(len(centres), 1)]
        dists = dists[dists > 0]
        if dists.size:
            return float(np.median(dists))
    pts = result.images[0].pts3d_world[::4, ::4].reshape(-1, 3)
    d = np.linalg.norm(pts[np.isfinite(pts).all(axis=1)] - centres[0], axis=1)
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def _scene_extent(result: SceneResult) -> float:
    """Largest distance from any camera to a finite point (every 4th pixel; for the clip range)."""
    extent = 0.0
    for im in result.images:
        pts = im.pts3d_world[::4, ::4].reshape(-1, 3)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts):
            extent = max(extent, float(np.linalg.norm(pts - im.cam2world[:3, 3], axis=1).max()))
    return extent


def build_cameras(
    result: SceneResult,
    collection: bpy.types.Collection,
    created: CreatedData,
    background_images: bool = True,
) -> tuple[list[bpy.types.Object], list[str]]:
    """One camera object per registered photo, linked into ``collection``.

    Each camera gets ``lens``/sensor/shift from the photo intrinsics (``K_photo``) and
    ``matrix_world`` from ``cam2world`` (OpenCV axes converted to Blender's). Settings that
    Blender keeps per scene (resolution, pixel aspect) are stored on the camera data as
    ``recon_resolution`` and ``recon_pixel_aspect``; :func:`apply_render_settings` sets them.

    Returns:
        ``(cameras, warnings)`` in the order of ``result.images``.
    """
    warnings: list[str] = []
    scale = scene_scale(result)
    clip_end = max(100.0, 2.0 * _scene_extent(result))
    cameras = []
    for index, image in enumerate(result.images):
        settings = camera_settings(image)
        data = created.add(bpy.data.cameras.new(id_name(image.name)))
        data.type = "PERSP"
        data.lens_unit = "MILLIMETERS"
        data.lens = settings["lens"]
        data.sensor_width = settings["sensor_width"]
        data.sensor_height = settings["sensor_height"]
        data.sensor_fit = settings["sensor_fit"]
        data.shift_x = settings["shift_x"]
        data.shift_y = settings["shift_y"]
        data.clip_start = min(0.1, 0.01 * scale)
        data.clip_end = clip_end
        data.display_size = 0.1 * scale  # the reference viewer's automatic camera size
        data["recon_resolution"] = [settings["resolution_x"], settings["resolution_y"]]
        data["recon_pixel_aspect"] = [settings["pixel_aspect_x"], settings["pixel_aspect_y"]]
        if background_images:
            warning = _add_background_photo(data, image.upright_file, created)
            if warning:
                warnings.append(warning)
        obj = created.add(bpy.data.objects.new(id_name(image.name), data))
        obj.matrix_world = Matrix(cam2world_opencv_to_blender(image.cam2world).tolist())
        obj["recon_role"] = "camera"
        obj["recon_index"] = index
        obj["recon_file"] = image.file
        collection.objects.link(obj)
        cameras.append(obj)
    return cameras, warnings


def _add_background_photo(
    camera_data: bpy.types.Camera, path: str, created: CreatedData
) -> str | None:
    """Show the photo behind the camera view, fitted to the frame; a warning if unreadable."""
    image, warning = load_photo(path, created)
    if image is None:
        return f"{warning} Camera {camera_data.name} has no background image."
    background = camera_data.background_images.new()
    background.image = image
    # The camera frame shows the photo's pixels; with fx != fy they are drawn non-square, so the
    # photo must be stretched to the frame. With square pixels CROP is the same fit and also
    # keeps the photo undistorted when another camera's render size is active.
    square = np.isclose(*camera_data["recon_pixel_aspect"], rtol=_ASPECT_TOLERANCE)
    background.frame_method = "CROP" if square else "STRETCH"
    background.alpha = 1.0
    camera_data.show_background_images = True
    return None


def apply_render_settings(scene: bpy.types.Scene, cameras: list[bpy.types.Object]) -> str | None:
    """Make ``cameras[0]`` the scene camera and set the render size and pixel aspect for it.

    Blender has one render resolution per scene. When all photos share their size and pixel
    aspect every camera is exact; otherwise the first one is, and the returned warning says so
    (each camera keeps its own values in ``recon_resolution`` / ``recon_pixel_aspect``).
    """
    if not cameras:
        return None
    first = cameras[0].data
    resolution = tuple(first["recon_resolution"])
    aspect = tuple(first["recon_pixel_aspect"])
    render = scene.render
    render.resolution_x, render.resolution_y = resolution
    render.resolution_percentage = 100
    render.pixel_aspect_x, render.pixel_aspect_y = aspect
    scene.camera = cameras[0]
    differ = [
        cam.name
        for cam in cameras[1:]
        if tuple(cam.data["recon_resolution"]) != resolution
        or not np.allclose(cam.data["recon_pixel_aspect"], aspect, rtol=_ASPECT_TOLERANCE)
    ]
    if not differ:
        return None
    return (
        f"The photos differ in size or pixel aspect; the render settings fit {cameras[0].name}. "
        f"{len(differ)} camera(s) (e.g. {differ[0]}) need their own resolution "
        "(stored on the camera as recon_resolution / recon_pixel_aspect)."
    )

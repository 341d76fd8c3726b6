"""Keep a reconstruction's objects on its result after the result was moved (levelled/scaled)."""

from __future__ import annotations

import bpy
from mathutils import Matrix

from ...core.geometry.conventions import cam2world_opencv_to_blender
from ...core.result import SceneResult
from ..builders import ImportOptions, rebuild_geometry
from . import animated_camera, image_planes


def reconstruction_cameras(collection: bpy.types.Collection) -> dict[int, bpy.types.Object]:
    """The per-photo camera objects of ``collection`` by image index."""
    return {
        int(obj["recon_index"]): obj
        for obj in collection.objects
        if obj.get("recon_role") == "camera" and "recon_index" in obj
    }


def _scale_camera_display(data: bpy.types.Camera, scale: float) -> None:
    """Clip range and display size follow the scene's scale."""
    data.clip_start *= scale
    data.clip_end *= scale
    data.display_size *= scale


def update_collection(
    collection: bpy.types.Collection, result: SceneResult, scale: float, options: ImportOptions
) -> None:
    """Put ``collection``'s objects where ``result`` (the moved result) has them.

    Points and meshes are rebuilt under ``options`` (all-or-nothing: on failure nothing moved);
    each camera gets its new pose; the animated camera is keyed anew; image planes follow their
    cameras and keep their depth in the scene's new units (``scale`` times the old one).
    """
    rebuild_geometry(collection, result, options)
    for index, camera in reconstruction_cameras(collection).items():
        camera.matrix_world = Matrix(cam2world_opencv_to_blender(result.images[index].cam2world).tolist())
        _scale_camera_display(camera.data, scale)
    for obj in list(collection.objects):
        role = obj.get("recon_role")
        if role == animated_camera.ROLE:
            animated_camera.key_animated_camera(obj, result)
            _scale_camera_display(obj.data, scale)
        elif role == image_planes.ROLE:
            index = int(obj["recon_index"])
            image_planes.set_plane_depth(obj, result.images[index], obj["recon_depth"] * scale)

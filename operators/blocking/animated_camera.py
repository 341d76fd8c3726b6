"""The animated camera: one camera keyed through the photos' poses, the photos playing behind it
as an image sequence, so scrubbing the timeline shows each frame lined up with the scene.

Keys go through ``keyframe_insert`` and the interpolation through the action's channelbag:
``Action.fcurves`` is gone in Blender 5.0 (layered actions). The background is ONE image of
source ``SEQUENCE`` with an auto-refreshing image user, which follows the frame (unlike one
background image per photo, where only the first shows).
"""

from __future__ import annotations

import logging
from pathlib import Path

import bpy
from bpy_extras import anim_utils

from ...core.blocking.animation import camera_path, image_sequence, make_links, shared_intrinsics
from ...core.result import SceneResult
from ..builders.cameras import camera_settings, scene_scale
from ..builders.datablocks import CreatedData, id_name

log = logging.getLogger(__name__)

ROLE = "animated_camera"
_STATIC_SETTINGS = ("sensor_width", "sensor_height", "sensor_fit", "lens", "shift_x", "shift_y")
_KEYED_SETTINGS = ("lens", "shift_x", "shift_y")


def _linear_interpolation(id_block: bpy.types.ID) -> None:
    """Linear interpolation between all keys of ``id_block`` (its action's channelbag)."""
    animation = id_block.animation_data
    channelbag = anim_utils.action_get_channelbag_for_slot(animation.action, animation.action_slot)
    for fcurve in channelbag.fcurves:
        for point in fcurve.keyframe_points:
            point.interpolation = "LINEAR"


def key_animated_camera(obj: bpy.types.Object, result: SceneResult) -> None:
    """(Re)key ``obj`` through the poses of ``result``'s photos in its stored order.

    ``obj["recon_order"]`` holds the photo indices in frame order and ``obj["recon_frame_start"]``
    the first frame. Location and rotation (quaternion, sign-continuous) are keyed every frame;
    lens and shift are keyed only when the photos' intrinsics differ.
    """
    order = [int(k) for k in obj["recon_order"]]
    keys = camera_path(result, order, int(obj["recon_frame_start"]))
    shared = shared_intrinsics(result, order)
    data = obj.data
    obj.animation_data_clear()
    data.animation_data_clear()
    obj.rotation_mode = "QUATERNION"
    obj.scale = (1.0, 1.0, 1.0)
    for key in keys:
        obj.location = key.location.tolist()
        obj.rotation_quaternion = key.quaternion.tolist()
        obj.keyframe_insert("location", frame=key.frame)
        obj.keyframe_insert("rotation_quaternion", frame=key.frame)
        if not shared:
            settings = camera_settings(result.images[key.image_index])
            for name in _KEYED_SETTINGS:
                setattr(data, name, settings[name])
                data.keyframe_insert(name, frame=key.frame)
    _linear_interpolation(obj)
    if not shared:
        _linear_interpolation(data)


def _sequence_background(
    data: bpy.types.Camera, files: list[str], frame_start: int, link_dir: Path, created: CreatedData
) -> str | None:
    """Show ``files`` (frame order) as an image sequence behind the camera; a warning if not."""
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        return f"{len(missing)} photo(s) not found (e.g. {missing[0]}): no background footage."
    sequence = image_sequence(files, link_dir)
    make_links(sequence)
    image = created.add(bpy.data.images.load(sequence.first_file, check_existing=False))
    image.source = "SEQUENCE"
    background = data.background_images.new()
    background.image = image
    background.frame_method = "CROP"
    background.alpha = 1.0
    user = background.image_user
    user.frame_start = frame_start
    user.frame_duration = len(files)
    user.frame_offset = sequence.frame_offset
    user.use_auto_refresh = True
    data.show_background_images = True
    return None


def remove_animated_cameras(collection: bpy.types.Collection) -> None:
    """Delete the animated cameras of ``collection`` with their data and unused footage."""
    objects = [o for o in collection.objects if o.get("recon_role") == ROLE]
    data = [o.data for o in objects]
    images = {bg.image for d in data for bg in d.background_images if bg.image is not None}
    bpy.data.batch_remove(objects)
    bpy.data.batch_remove([d for d in data if d.users == 0])
    bpy.data.batch_remove([i for i in images if i.users == 0])


def build_animated_camera(
    result: SceneResult,
    order: list[int],
    frame_start: int,
    collection: bpy.types.Collection,
    link_dir: str | Path,
    background: bool = True,
) -> tuple[bpy.types.Object, list[str]]:
    """A camera in ``collection`` keyed through the photos ``order`` from ``frame_start``,
    replacing an earlier one. All-or-nothing: on failure nothing new is left.

    The camera's static settings are the first photo's (``recon_resolution`` and
    ``recon_pixel_aspect`` as on the per-photo cameras, for the render settings).

    Args:
        link_dir: folder for the links of the image sequence when the photos are not already a
            numbered run of files.

    Returns:
        ``(camera object, warnings for the user)``.

    Raises:
        InputError: a bad order (see :func:`~core.blocking.animation.camera_path`).
    """
    warnings = []
    first = result.images[order[0]]
    sizes = {tuple(result.images[k].photo_size) for k in order}
    if len(sizes) > 1:
        warnings.append("The photos differ in size: the animated camera's frame fits the first.")
    created = CreatedData()
    try:
        data = created.add(bpy.data.cameras.new(id_name(f"{collection.name} animated camera")))
        settings = camera_settings(first)
        for name in _STATIC_SETTINGS:
            setattr(data, name, settings[name])
        # Clip range and size from the camera spacing, so they fit whatever the scene's units.
        scale = scene_scale(result)
        data.clip_start, data.clip_end = min(0.1, 0.01 * scale), max(100.0, 1000.0 * scale)
        data.display_size = 0.2 * scale
        data["recon_resolution"] = [settings["resolution_x"], settings["resolution_y"]]
        data["recon_pixel_aspect"] = [settings["pixel_aspect_x"], settings["pixel_aspect_y"]]
        obj = created.add(bpy.data.objects.new(data.name, data))
        obj["recon_role"] = ROLE
        obj["recon_order"] = list(order)
        obj["recon_frame_start"] = int(frame_start)
        key_animated_camera(obj, result)
        if background:
            files = [result.images[k].upright_file for k in order]
            warning = _sequence_background(data, files, frame_start, Path(link_dir), created)
            if warning:
                warnings.append(warning)
        remove_animated_cameras(collection)
        collection.objects.link(obj)
    except BaseException:
        created.remove_all()
        raise
    for warning in warnings:
        log.warning(warning)
    return obj, warnings

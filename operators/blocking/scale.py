"""RECON_OT_set_scale: real units from one known measurement, applied to everything at once.

The measurement is a distance between two picked points (two selected vertices in Edit Mode,
two selected objects such as empties, or one selected object and the 3D cursor), between two
selected cameras of the reconstruction, or the active camera's height above the floor.
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy.props import EnumProperty, FloatProperty, StringProperty

from ...core.blocking.level import find_floor
from ...core.blocking.scale import (
    apply_scale,
    scale_from_camera_height,
    scale_from_cameras,
    scale_from_distance,
)
from ...core.errors import InputError, ReconstructionError
from ...core.result import SceneResult
from ..builders import GEOMETRY_ROLES
from .common import commit_transform, conf_threshold, last_result, poll_has_result

_PICK_HELP = (
    "Pick two points: select two vertices in Edit Mode, or two objects (e.g. empties), or one "
    "object and place the 3D cursor on the other point."
)


def picked_points(context: bpy.types.Context) -> tuple[np.ndarray, np.ndarray]:
    """The two points the user picked, ``(3,)`` float64 each, in the result's world frame.

    Vertices of the reconstruction's own points or mesh are taken in that object's local frame,
    which is the result's frame: the object is rebuilt from the result (a transform the user gave
    it is not kept), so a measurement through that transform would be off by it.

    Raises:
        InputError: not exactly two points are picked (the message says how to pick them).
    """
    active = context.active_object
    if active is not None and active.type == "MESH" and active.mode == "EDIT":
        active.update_from_editmode()
        local = [v.co for v in active.data.vertices if v.select]
        if len(local) != 2:
            raise InputError(f"{len(local)} vertices are selected. {_PICK_HELP}")
        if active.get("recon_role") in GEOMETRY_ROLES:
            return tuple(np.array(co) for co in local)
        return tuple(np.array(active.matrix_world @ co) for co in local)
    selected = list(context.selected_objects)
    if len(selected) == 2:
        return tuple(np.array(o.matrix_world.translation) for o in selected)
    if len(selected) == 1:
        return np.array(selected[0].matrix_world.translation), np.array(context.scene.cursor.location)
    raise InputError(f"{len(selected)} objects are selected. {_PICK_HELP}")


def _camera_index(obj: bpy.types.Object) -> int | None:
    return int(obj["recon_index"]) if obj.get("recon_role") == "camera" else None


def picked_cameras(context: bpy.types.Context) -> list[int]:
    """Image indices of the selected per-photo cameras (active one first)."""
    objects = list(context.selected_objects)
    if context.active_object in objects:
        objects.remove(context.active_object)
        objects.insert(0, context.active_object)
    return [k for k in (_camera_index(o) for o in objects) if k is not None]


class RECON_OT_set_scale(bpy.types.Operator):
    """Scale the reconstruction (points, meshes, cameras and the cached result) so that a known
    measurement comes out right"""

    bl_idname = "recon.set_scale"
    bl_label = "Set Scale"
    bl_options = {"REGISTER", "UNDO"}

    mode: EnumProperty(
        name="Measure",
        items=(
            ("POINTS", "Between Points", _PICK_HELP),
            ("CAMERAS", "Between Cameras", "The distance between two selected photo cameras"),
            ("HEIGHT", "Camera Height", "The active photo camera's height above the floor"),
        ),
        default="POINTS",
    )
    distance: FloatProperty(
        name="Known Length", description="The true length, in the units below", default=1.0,
        min=0.0, precision=4,
    )
    units: StringProperty(name="Units", description="Name of the units (kept with the result)",
                          default="m")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_has_result(cls, context)

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self)

    def _factor(self, context: bpy.types.Context, result: SceneResult) -> float:
        if self.mode == "POINTS":
            a, b = picked_points(context)
            return scale_from_distance(a, b, self.distance)
        if self.mode == "CAMERAS":
            cameras = picked_cameras(context)
            if len(cameras) != 2:
                raise InputError(
                    f"Select two photo cameras of the reconstruction ({len(cameras)} selected)."
                )
            return scale_from_cameras(result, cameras[0], cameras[1], self.distance)
        active = _camera_index(context.active_object) if context.active_object else None
        if active is None:
            raise InputError("Make a photo camera of the reconstruction the active object "
                             "(click it last).")
        floor = find_floor(result, conf_threshold=conf_threshold(context))
        return scale_from_camera_height(result, active, self.distance, floor)

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            result = last_result(context)
            factor = self._factor(context, result)
            scaled = apply_scale(result, factor, self.units)
            commit_transform(context, scaled, np.diag([factor, factor, factor, 1.0]))
        except ReconstructionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Scaled the reconstruction by {factor:.6g} (units: {self.units})")
        return {"FINISHED"}


CLASSES = (RECON_OT_set_scale,)

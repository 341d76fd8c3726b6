"""RECON_OT_level_scene: the floor becomes the XY plane with +Z up (points, meshes, cameras)."""

from __future__ import annotations

import bpy
import numpy as np
from bpy.props import EnumProperty

from ...core.blocking.level import level_scene
from ...core.errors import ReconstructionError
from .common import commit_transform, conf_threshold, last_result, poll_has_result


class RECON_OT_level_scene(bpy.types.Operator):
    """Find the floor (the largest plane below the cameras) and make it the ground plane, +Z up;
    points, meshes, cameras and the cached result move together"""

    bl_idname = "recon.level_scene"
    bl_label = "Level Scene"
    bl_options = {"REGISTER", "UNDO"}

    origin: EnumProperty(
        name="Origin",
        items=(
            ("FIRST_CAMERA", "Under First Camera", "The floor point under the first photo's camera"),
            ("CURSOR", "3D Cursor", "The 3D cursor, dropped onto the floor"),
        ),
        default="FIRST_CAMERA",
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_has_result(cls, context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            result = last_result(context)
            origin = np.array(context.scene.cursor.location) if self.origin == "CURSOR" else None
            levelled, new_from_world, floor = level_scene(
                result, origin, conf_threshold=conf_threshold(context)
            )
            commit_transform(context, levelled, new_from_world)
        except ReconstructionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        tilt = np.degrees(np.arccos(np.clip(abs(floor.normal[2]), 0.0, 1.0)))
        self.report({"INFO"}, f"Levelled on a floor of {floor.inliers} points "
                              f"(it was tilted {tilt:.1f} degrees)")
        return {"FINISHED"}


CLASSES = (RECON_OT_level_scene,)

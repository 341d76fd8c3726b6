"""RECON_OT_animated_camera: one camera through the ordered photos, the footage behind it."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty

from ...core.blocking.animation import photo_order
from ...core.errors import ReconstructionError
from ..builders.cameras import apply_render_settings
from .animated_camera import build_animated_camera
from .common import poll_has_result, result_and_collection

LINK_FOLDER = "animated_camera_frames"
"""Folder (inside the result folder) for the links of the image sequence, when needed."""


class RECON_OT_animated_camera(bpy.types.Operator):
    """One camera keyed through the poses of the ordered photos (video frames), with the photos as
    an image sequence behind it, so scrubbing shows the footage lined up with the scene"""

    bl_idname = "recon.animated_camera"
    bl_label = "Animated Camera"
    bl_options = {"REGISTER", "UNDO"}

    frame_start: IntProperty(name="First Frame", default=1, min=0)
    order: EnumProperty(
        name="Order",
        items=(
            ("NAME", "By Name", "File names, numbers compared by value (frame2 before frame10)"),
            ("INPUT", "As Reconstructed", "The order of the photos in the result"),
        ),
        default="NAME",
    )
    background: BoolProperty(name="Footage", description="Show the photos behind the camera",
                             default=True)
    set_active: BoolProperty(
        name="Make Active",
        description="Make it the scene camera and set the render size and frame range",
        default=True,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_has_result(cls, context)

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        self.frame_start = context.scene.frame_start
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            result, collection = result_and_collection(context)
            order = photo_order([im.file for im in result.images], self.order == "NAME")
            link_dir = Path(context.scene.recon.last_result_dir) / LINK_FOLDER
            camera, warnings = build_animated_camera(
                result, order, self.frame_start, collection, link_dir, self.background
            )
        except (ReconstructionError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.set_active:
            scene = context.scene
            scene.frame_start, scene.frame_end = self.frame_start, self.frame_start + len(order) - 1
            apply_render_settings(scene, [camera])
            scene.frame_set(self.frame_start)
        for warning in warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"{camera.name}: {len(order)} frames from {self.frame_start}")
        return {"FINISHED"}


CLASSES = (RECON_OT_animated_camera,)

"""RECON_OT_image_planes: each photo as a textured plane in its camera's frustum."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, FloatProperty

from ...core.errors import InputError, ReconstructionError
from .common import poll_has_result, result_and_collection
from .image_planes import build_image_plane
from .sync import reconstruction_cameras


class RECON_OT_image_planes(bpy.types.Operator):
    """Place each photo as a textured plane in front of its camera, filling its view at the
    chosen depth (planes follow their cameras)"""

    bl_idname = "recon.image_planes"
    bl_label = "Image Planes"
    bl_options = {"REGISTER", "UNDO"}

    depth: FloatProperty(name="Depth", description="Distance in front of the camera",
                         default=1.0, min=1e-6, subtype="DISTANCE")
    opacity: FloatProperty(name="Opacity", default=1.0, min=0.0, max=1.0, subtype="FACTOR")
    selected_only: BoolProperty(name="Selected Cameras Only", default=False)

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_has_result(cls, context)

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            result, collection = result_and_collection(context)
            cameras = reconstruction_cameras(collection)
            if self.selected_only:
                cameras = {k: c for k, c in cameras.items() if c.select_get()}
            if not cameras:
                raise InputError("No photo camera to place a plane for (select some, or untick "
                                 "Selected Cameras Only).")
            warnings = []
            for index, camera in sorted(cameras.items()):
                _plane, warning = build_image_plane(camera, result.images[index], index,
                                                    self.depth, self.opacity, collection)
                if warning:
                    warnings.append(warning)
        except ReconstructionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for warning in warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"{len(cameras)} image planes at depth {self.depth:g}")
        return {"FINISHED"}


CLASSES = (RECON_OT_image_planes,)

"""The "Blocking" sub-panel of the Recon sidebar tab: level, scale, export, animated camera and
image planes for the last reconstruction."""

from __future__ import annotations

import bpy

from .panels import RECON_PT_main


class RECON_PT_blocking(bpy.types.Panel):
    bl_label = "Scene Blocking"
    bl_idname = "RECON_PT_blocking"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Recon"
    bl_parent_id = RECON_PT_main.bl_idname
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if not context.scene.recon.last_result_dir:
            layout.label(text="No result yet: press Reconstruct")
            return
        col = layout.column(align=True)
        col.label(text="Level (floor on the ground plane)")
        row = col.row(align=True)
        row.operator("recon.level_scene", text="Origin Under Camera").origin = "FIRST_CAMERA"
        row.operator("recon.level_scene", text="Origin at Cursor").origin = "CURSOR"

        col = layout.column(align=True)
        col.label(text="Scale from a known length")
        for mode, text in (("POINTS", "Between Points"), ("CAMERAS", "Between Cameras"),
                           ("HEIGHT", "Camera Height")):
            col.operator("recon.set_scale", text=text).mode = mode

        col = layout.column(align=True)
        col.label(text="Export")
        row = col.row(align=True)
        row.operator("recon.export_result", text="COLMAP").format = "COLMAP_BIN"
        row.operator("recon.export_result", text="COLMAP Text").format = "COLMAP_TXT"
        row = col.row(align=True)
        row.operator("recon.export_result", text="PLY").format = "PLY"
        row.operator("recon.export_result", text="transforms.json").format = "NERF"

        col = layout.column(align=True)
        col.label(text="Cameras")
        col.operator("recon.animated_camera", icon="CAMERA_DATA")
        col.operator("recon.image_planes", icon="IMAGE_PLANE")


CLASSES = (RECON_PT_blocking,)

"""The sidebar panel (3D viewport, "Recon" tab): settings, Reconstruct/Cancel, progress, results."""

from __future__ import annotations

import json
from pathlib import Path

import bpy

from ..operators import dependencies
from . import preferences
from .properties import photo_files, resolve_backend


class RECON_PT_main(bpy.types.Panel):
    bl_label = "Photo Reconstruction"
    bl_idname = "RECON_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Recon"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        props, wm = context.scene.recon, context.window_manager
        prefs = preferences.get_preferences(context)

        col = layout.column()
        col.enabled = not wm.recon_running
        col.prop(props, "directory")
        col.prop(props, "backend")
        col.prop(props, "resolution")
        col.prop(props, "pair_graph")
        if props.pair_graph in {"swin", "logwin"}:
            col.prop(props, "window")
        col.prop(props, "preset", expand=True)
        _draw_problems(col, props, prefs)

        if wm.recon_running:
            layout.progress(text=wm.recon_status or "Working", factor=wm.recon_progress, type="BAR")
            layout.operator("recon.cancel", icon="CANCEL")
        else:
            layout.operator("recon.reconstruct", icon="PLAY")


class RECON_PT_result(bpy.types.Panel):
    """Import settings (re-import without re-running) and per-photo depth/confidence maps."""

    bl_label = "Result"
    bl_idname = "RECON_PT_result"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Recon"
    bl_parent_id = "RECON_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        props = context.scene.recon
        layout.prop(props, "output", expand=True)
        layout.prop(props, "auto_threshold")
        row = layout.row()
        row.enabled = not props.auto_threshold
        row.prop(props, "conf_threshold")
        layout.prop(props, "sky_mask")
        if props.sky_mask:
            layout.label(text="Sky = bright bluish/grey regions (colour heuristic)", icon="INFO")
        if not props.last_result_dir:
            layout.label(text="No result yet: press Reconstruct")
            return
        layout.operator("recon.reimport", icon="FILE_REFRESH")
        box = layout.box()
        box.label(text="Depth (grey, near = dark) / confidence (blue = low, red = high)")
        for index, name in enumerate(_result_files(props.last_result_dir)):
            row = box.row(align=True)
            row.label(text=name)
            for kind, text in (("DEPTH", "Depth"), ("CONFIDENCE", "Confidence")):
                op = row.operator("recon.show_maps", text=text)
                op.index, op.kind = index, kind


def _draw_problems(layout: bpy.types.UILayout, props, prefs) -> None:
    """A clear line for each thing that is missing or will be substituted."""
    folder = bpy.path.abspath(props.directory)
    if not props.directory:
        layout.label(text="Choose a folder of photos", icon="INFO")
    elif not Path(folder).is_dir():
        layout.label(text="The photo folder does not exist", icon="ERROR")
    elif not photo_files(folder):
        layout.label(text="No images in the photo folder", icon="ERROR")
    backend, note = resolve_backend(props, prefs)
    if note:
        layout.label(text="No DUSt3R weights found: the classical backend is used", icon="ERROR")
        layout.label(text="Get a checkpoint: preferences, DUSt3R Models")
    report = dependencies.STATE.report  # filled by Check Dependencies (preferences)
    missing = report.missing_for(backend) if report is not None else []
    if missing:
        layout.label(text=f"The worker's Python lacks {', '.join(missing)}", icon="ERROR")
        layout.label(text="Install it (preferences) or set another Worker Python")


def _result_files(result_dir: str) -> list[str]:
    """Photo names of the last result, read from its small JSON (not the arrays)."""
    try:
        meta = json.loads((Path(result_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return []
    return [Path(image["file"]).name for image in meta.get("images", [])]


CLASSES = (RECON_PT_main, RECON_PT_result)

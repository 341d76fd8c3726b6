"""What a running job shows in the UI: the panel's progress bar, the status bar, the cursor
progress, and the Cancel button the modal reconstruct operator listens to."""

from __future__ import annotations

import bpy

from ..core.job import JobStatus


def format_status(status: JobStatus) -> str:
    """One status line: ``stage: message  42%  ETA 1:05``."""
    text = f"{status.stage}: {status.message}" if status.message else status.stage
    text += f"  {100 * status.fraction:.0f}%"
    if status.eta_s is not None and status.state == "running":
        text += f"  ETA {int(status.eta_s) // 60}:{int(status.eta_s) % 60:02d}"
    return text


def begin(context: bpy.types.Context) -> None:
    wm = context.window_manager
    wm.recon_running, wm.recon_cancel_requested = True, False
    wm.recon_progress, wm.recon_status = 0.0, "Starting the worker"
    wm.progress_begin(0.0, 1.0)


def show(context: bpy.types.Context, status: JobStatus) -> None:
    wm = context.window_manager
    wm.recon_status, wm.recon_progress = format_status(status), status.fraction
    wm.progress_update(status.fraction)
    if context.workspace is not None:
        context.workspace.status_text_set(f"Reconstruction: {wm.recon_status}")
    _redraw_sidebars(wm)


def end(context: bpy.types.Context) -> None:
    """Clear every progress display."""
    wm = context.window_manager
    wm.progress_end()
    if context.workspace is not None:  # None while Blender loads another file
        context.workspace.status_text_set(None)
    wm.recon_running, wm.recon_cancel_requested = False, False
    wm.recon_progress, wm.recon_status = 0.0, ""
    _redraw_sidebars(wm)


def _redraw_sidebars(wm: bpy.types.WindowManager) -> None:
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


class RECON_OT_cancel(bpy.types.Operator):
    """Stop the running reconstruction; the scene is left unchanged"""

    bl_idname = "recon.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.window_manager.recon_running

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.window_manager.recon_cancel_requested = True  # the modal operator acts on it
        return {"FINISHED"}


CLASSES = (RECON_OT_cancel,)

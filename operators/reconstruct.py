"""RECON_OT_reconstruct: run a reconstruction job and import its result.

Two drivers over the same job (``core.job.Job``, a worker subprocess speaking through files):

* ``invoke`` (the panel button): modal; a window-manager timer polls the job, the panel shows a
  progress bar and the status bar the stage and ETA; Esc or the Cancel button stops the worker.
* ``execute`` (scripts, ``blender -b``, the ``bpy`` module): synchronous, through ``run_job``,
  because timers and modal operators never run headless.

Either way the scene is only touched once the result is complete.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from ..core.errors import InputError, ReconstructionError
from ..core.job import Job, JobStatus, prune_job_folders, run_job
from ..core.worker import RESULT_DIR
from ..ui import preferences
from ..ui.properties import resolve_backend, to_job_config
from . import job_display
from .apply import apply_result, paths_in_use
from .dependencies import worker_extra_paths

log = logging.getLogger(__name__)

_RUNNING: set[Job] = set()
"""Jobs of modal operators still running, cancelled on unregister."""


def new_job_dir(prefs) -> Path:
    """A fresh job folder under the cache folder (``jobs/<date-time>-<random>``); older job
    folders beyond the Keep Jobs preference go, except those the open .blend file uses.

    Raises:
        InputError: the folder cannot be created (naming it and why).
    """
    jobs = preferences.cache_folder(prefs) / "jobs"
    removed = prune_job_folders(jobs, prefs.keep_jobs - 1, protect=paths_in_use())
    if removed:
        log.info("Removed %d old job folder(s) from %s (Keep Jobs: %d)", len(removed), jobs, prefs.keep_jobs)
    job_dir = jobs / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    try:
        job_dir.mkdir(parents=True)
    except OSError as exc:
        raise InputError(
            f"Cannot create the job folder {job_dir}: {exc.strerror or exc}. Choose a writable "
            "cache folder (the Cache Folder preference; headless: --cache-dir)."
        ) from exc
    return job_dir


def _log_progress(status: JobStatus) -> None:
    if status.state == "running":  # the end is reported by the operator itself
        log.info("%s", job_display.format_status(status))


class RECON_OT_reconstruct(bpy.types.Operator):
    """Reconstruct cameras and geometry from the photos in a folder"""

    bl_idname = "recon.reconstruct"
    bl_label = "Reconstruct"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(
        name="Photos", description="Photo folder; empty = the panel's", subtype="DIR_PATH",
        options={"SKIP_SAVE"},
    )
    backend: EnumProperty(
        name="Backend",
        items=(
            ("PANEL", "Panel Setting", "The backend chosen in the panel"),
            ("classical", "Classical", ""),
            ("dust3r", "DUSt3R", ""),
            ("synthetic", "Synthetic", "Generated scene with exact cameras (tests)"),
            ("result_file", "Result File", "Re-load a saved result (options: path)"),
        ),
        default="PANEL",
        options={"SKIP_SAVE"},
    )
    options_json: StringProperty(
        name="Options", description="JSON object merged over the backend options", default="{}",
        options={"SKIP_SAVE"},
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not context.window_manager.recon_running

    def _prepare(self, context: bpy.types.Context):
        """(job config, job folder, photo folder, worker interpreter arguments of ``Job``)."""
        props, prefs = context.scene.recon, preferences.get_preferences(context)
        try:
            extra = json.loads(self.options_json or "{}")
        except ValueError as exc:
            raise InputError(f"Options must be a JSON object: {exc}") from exc
        if not isinstance(extra, dict):
            raise InputError(f"Options must be a JSON object, not {self.options_json!r}.")
        backend = "" if self.backend == "PANEL" else self.backend
        note = "" if backend else resolve_backend(props, prefs, extra)[1]
        if note:  # e.g. DUSt3R chosen without weights: say that the classical backend runs
            self.report({"WARNING"}, note)
        config = to_job_config(props, prefs, self.directory, backend, extra)
        size = config.options.get("image_size")
        if config.backend == "dust3r" and "weights" not in extra and size != int(props.resolution):
            self.report({"WARNING"}, (
                f"No {props.resolution} px DUSt3R checkpoint in {preferences.weights_folder(prefs)}:"
                f" {Path(config.options['weights']).name} runs at its own {size} px instead."))
        directory = self.directory or props.directory
        worker = {"python": preferences.worker_python(prefs), "extra_paths": worker_extra_paths(prefs)}
        return config, new_job_dir(prefs), directory, worker

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            config, job_dir, directory, worker = self._prepare(context)
            result = run_job(config, job_dir, progress_cb=_log_progress, **worker)
            collection = apply_result(context, result, job_dir / RESULT_DIR, directory)
        except ReconstructionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except KeyboardInterrupt:  # Ctrl+C or SIGTERM in a script: run_job stopped the worker
            self.report({"ERROR"}, "Interrupted; the worker was stopped")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Reconstructed {len(result.images)} photos into {collection.name}")
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background:
            return self.execute(context)
        try:
            self._start(context)
        except ReconstructionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _start(self, context: bpy.types.Context) -> None:
        """Start the worker, the polling timer and the progress displays (modal driver)."""
        config, self._job_dir, self._directory, worker = self._prepare(context)
        self._job = Job(config, self._job_dir, **worker)
        self._job.start()
        _RUNNING.add(self._job)
        job_display.begin(context)
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        wm = context.window_manager
        if event.type == "ESC" or wm.recon_cancel_requested:
            self._job.cancel()
            self._finish(context)
            self.report({"WARNING"}, "Reconstruction cancelled; the scene is unchanged")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        status = self._job.poll()
        if status.state == "running":
            job_display.show(context, status)
            return {"PASS_THROUGH"}
        self._finish(context)
        try:
            result = self._job.result()  # raises the worker's error, or Cancelled
            collection = apply_result(context, result, self._job_dir / RESULT_DIR, self._directory)
        except ReconstructionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Reconstructed {len(result.images)} photos into {collection.name}")
        return {"FINISHED"}

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator (a file is loaded, the window closes): stop the job."""
        self._job.cancel()
        self._finish(context)

    def _finish(self, context: bpy.types.Context) -> None:
        """Stop polling and clear the progress displays (every exit path comes through here)."""
        context.window_manager.event_timer_remove(self._timer)
        _RUNNING.discard(self._job)
        job_display.end(context)


def cancel_running_jobs() -> None:
    """Stop every job still running (the add-on is being disabled)."""
    for job in list(_RUNNING):
        job.cancel()
    _RUNNING.clear()


CLASSES = (RECON_OT_reconstruct,)

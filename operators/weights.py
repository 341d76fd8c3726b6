"""Weights operators: download a released DUSt3R checkpoint, or locate one already on disk.

Download runs only with Blender's online access allowed (``bpy.app.online_access``); without it
the operator says which file to get from where and where to put it. The download itself is
:func:`..core.dust3r.download.ensure_weights` (resume, atomic rename) in a background thread:
it is network I/O without any bpy call, and a modal timer copies its progress to the preferences
(Esc cancels it; :mod:`.background_task`).
Locate checks the file with the worker's own loader (in the worker's Python, which takes a while
for 2 GB) before copying or linking it into the weights folder, and refuses another model by name;
it runs in a background thread too, so Blender stays responsive.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import bpy
from bpy.props import BoolProperty, StringProperty

from ..core import checkpoints
from ..core.dust3r.download import ensure_weights
from ..core.dust3r.registry import WEIGHTS
from ..core.errors import Cancelled, DependencyError, WeightsError
from ..core.progress import CancelToken, Progress
from ..ui import preferences
from . import dependencies
from .background_task import BackgroundTaskOperator, redraw_preferences


@dataclass
class DownloadState:
    """The download or Locate check in progress (``name`` set), or the outcome of the last one.
    ``token`` is set for a download (it can be cancelled), None for a Locate check."""

    name: str = ""
    fraction: float = 0.0
    message: str = ""
    token: CancelToken | None = None
    thread: threading.Thread | None = None
    outcome: str = ""
    failed: bool = False


STATE = DownloadState()


def _download(info, folder) -> None:
    """Body of the download thread; touches only :data:`STATE`, never bpy."""

    def report(stage: str, fraction: float, message: str) -> None:
        STATE.fraction, STATE.message = fraction, message

    try:
        path = ensure_weights(info, folder, allow_network=True,
                              progress=Progress(report, STATE.token))
        STATE.outcome, STATE.failed = f"Downloaded {path}", False
    except Cancelled:
        STATE.outcome, STATE.failed = (
            f"Download of {info.name} cancelled; the next Download resumes where it stopped.", False
        )
    except WeightsError as exc:
        STATE.outcome, STATE.failed = str(exc), True
    finally:
        STATE.name = ""


def _locate(source: str, info, folder, python: str, extra_paths: list[str], link: bool) -> None:
    """Body of the Locate thread; touches only :data:`STATE`, never bpy."""
    try:
        placed = checkpoints.place(source, info, folder, python, extra_paths, link=link)
        STATE.outcome, STATE.failed = f"{info.name} is ready: {placed}", False
    except (WeightsError, DependencyError) as exc:
        STATE.outcome, STATE.failed = str(exc), True
    finally:
        STATE.name = ""


class _ThreadOperator(BackgroundTaskOperator):
    """Runs a task of this module in a thread (:data:`STATE` carries its progress and outcome)."""

    def _start(self, context, name: str, message: str, token: CancelToken | None, target, args):
        STATE.name, STATE.fraction, STATE.message, STATE.token = name, 0.0, message, token
        STATE.outcome, STATE.failed = "", False
        STATE.thread = threading.Thread(target=target, args=args, daemon=True)
        STATE.thread.start()
        return self._wait_or_poll(context)

    def _task_running(self) -> bool:
        return STATE.thread is not None and STATE.thread.is_alive()

    def _task_wait(self) -> None:
        STATE.thread.join()

    def _task_cancel(self) -> None:
        if STATE.token is not None:  # a Locate check cannot be stopped; it writes nothing early
            STATE.token.cancel()

    def _finish(self, context):
        STATE.thread = None
        self.report({"ERROR"} if STATE.failed else {"INFO"}, STATE.outcome)
        redraw_preferences(context)
        return {"CANCELLED"} if STATE.failed else {"FINISHED"}


def cancel_running_downloads(timeout_s: float = 5.0) -> None:
    """Stop a download still running (add-on disabled); its ``.part`` file stays for resuming.
    A Locate check is left to finish on its own (it writes nothing until the file passed)."""
    if STATE.thread is not None and STATE.token is not None:
        STATE.token.cancel()
        STATE.thread.join(timeout_s)
        STATE.thread = None


def _lookup(operator, name: str):
    info = WEIGHTS.get(name)
    if info is None:
        operator.report({"ERROR"}, f"Unknown checkpoint {name!r}; known: {', '.join(WEIGHTS)}.")
    return info


class RECON_OT_download_weights(_ThreadOperator, bpy.types.Operator):
    bl_idname = "recon.download_weights"
    bl_label = "Download Weights"
    bl_description = (
        "Download this DUSt3R checkpoint into the weights folder (about 2 GB; licence "
        "CC BY-NC-SA 4.0, non-commercial). Needs online access"
    )

    name: StringProperty(options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return STATE.thread is None

    def invoke(self, context, event):
        info = _lookup(self, self.name)
        if info is None:
            return {"CANCELLED"}
        if not bpy.app.online_access:
            return self.execute(context)  # reports what to download by hand
        return context.window_manager.invoke_confirm(
            self, event, title=f"Download {info.name}?",
            message=(f"About {info.approx_size_bytes / 1e9:.1f} GB. Licence: {info.licence}. "
                     "By downloading you accept it."),
            confirm_text="Download",
        )

    def execute(self, context):
        info = _lookup(self, self.name)
        if info is None:
            return {"CANCELLED"}
        folder = preferences.weights_folder(preferences.get_preferences(context))
        if not bpy.app.online_access:
            try:  # returns at once when the file is already there, else says what to do
                path = ensure_weights(info, folder, allow_network=False)
            except WeightsError as exc:
                STATE.outcome, STATE.failed = str(exc), True
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            self.report({"INFO"}, f"{path} is already there.")
            return {"FINISHED"}
        return self._start(context, info.name, "starting", CancelToken(), _download, (info, folder))


class RECON_OT_cancel_weights_download(bpy.types.Operator):
    bl_idname = "recon.cancel_weights_download"
    bl_label = "Cancel Download"
    bl_description = "Stop the download; the part downloaded so far is kept to resume later"

    @classmethod
    def poll(cls, context):
        return STATE.thread is not None and STATE.token is not None

    def execute(self, context):
        STATE.token.cancel()
        return {"FINISHED"}


class RECON_OT_locate_weights(_ThreadOperator, bpy.types.Operator):
    bl_idname = "recon.locate_weights"
    bl_label = "Locate Weights"
    bl_description = (
        "Use a checkpoint already on disk (.pth, or model.safetensors with its config.json): it "
        "is checked, then copied or linked into the weights folder"
    )

    name: StringProperty(options={"HIDDEN"})
    filepath: StringProperty(subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.pth;*.safetensors", options={"HIDDEN"})
    link: BoolProperty(
        name="Link Instead of Copy",
        description="Make a symbolic link to the file instead of a 2 GB copy",
        default=False,
    )

    @classmethod
    def poll(cls, context):
        return STATE.thread is None

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        info = _lookup(self, self.name)
        if info is None:
            return {"CANCELLED"}
        prefs = preferences.get_preferences(context)
        source = bpy.path.abspath(self.filepath)
        args = (source, info, preferences.weights_folder(prefs), preferences.worker_python(prefs),
                dependencies.worker_extra_paths(prefs), self.link)
        return self._start(context, info.name, f"Checking {source}", None, _locate, args)


CLASSES = (
    RECON_OT_download_weights,
    RECON_OT_cancel_weights_download,
    RECON_OT_locate_weights,
)

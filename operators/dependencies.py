"""Dependency operators: check what the worker's Python has, install PyTorch for it.

The worker runs either in an external Python environment (the Worker Python preference; it
brings its own packages) or in Blender's own Python, which then gets two folders on its
``PYTHONPATH`` (:func:`worker_extra_paths`): the extension's ``site-packages`` user folder that
Install PyTorch fills, and the folder where Blender unpacked the wheels bundled in the zip.
Blender's own process never imports torch and its numpy is never touched: everything runs in
child processes (:mod:`..core.deps`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import EnumProperty

from ..core import deps
from ..core.errors import Cancelled, DependencyError
from ..ui import preferences
from .background_task import BackgroundTaskOperator, redraw_preferences

TORCH_FOLDER = "site-packages"
"""Extension user sub-folder that Install PyTorch installs into (``pip --target``)."""


VARIANT_ITEMS = (
    ("auto", "Automatic", "CUDA build when an NVIDIA driver supports one, macOS build on a Mac, "
     "else the CPU build"),
    ("cpu", "CPU", "The CPU build (smallest download)"),
    ("cuda", "CUDA", "The CUDA build for NVIDIA GPUs (a large download)"),
)


@dataclass
class DependencyState:
    """What the preferences show: the last check, and the install in progress or its outcome."""

    report: deps.EnvironmentReport | None = None
    error: str = ""
    install: deps.PipRun | None = None
    status: deps.PipStatus | None = None
    description: str = ""
    outcome: str = ""
    failed: bool = False


STATE = DependencyState()


def torch_folder() -> Path:
    """The folder Install PyTorch fills (created)."""
    return preferences._user_folder(TORCH_FOLDER)


def install_log_path() -> Path:
    """pip's full output of the last Install PyTorch (the folder is created)."""
    return preferences._user_folder("logs") / "install-torch.log"


def bundled_site_packages() -> Path:
    """Where Blender unpacks the wheels of every installed extension (one shared folder)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    extensions = Path(bpy.utils.user_resource("EXTENSIONS"))
    return extensions / ".local" / "lib" / version / "site-packages"


def worker_extra_paths(prefs) -> list[str]:
    """``PYTHONPATH`` entries for the worker (``Job(extra_paths=...)``).

    Blender's own Python gets the PyTorch folder, then the bundled wheels. An external Worker
    Python gets none: its environment has its own packages and may be another Python version,
    for which the bundled binary wheels would be wrong.
    """
    if prefs.python:
        return []
    return [str(p) for p in (torch_folder(), bundled_site_packages()) if p.is_dir()]


def check(prefs) -> bool:
    """Probe the worker's Python into :data:`STATE`; returns whether the probe ran."""
    try:
        STATE.report = deps.probe(preferences.worker_python(prefs), worker_extra_paths(prefs))
        STATE.error = ""
    except DependencyError as exc:
        STATE.report, STATE.error = None, str(exc)
    return STATE.report is not None


def cancel_running_installs() -> None:
    """Stop a pip still running (add-on disabled); the next install replaces what it left."""
    if STATE.install is not None:
        STATE.install.cancel()
        STATE.install = None


class RECON_OT_check_dependencies(bpy.types.Operator):
    bl_idname = "recon.check_dependencies"
    bl_label = "Check Dependencies"
    bl_description = (
        "Run the worker's Python once and list what it has: torch (CUDA/MPS), SciPy, Pillow, "
        "pycolmap"
    )

    def execute(self, context):
        if not check(preferences.get_preferences(context)):
            self.report({"ERROR"}, STATE.error)
            return {"CANCELLED"}
        self.report({"INFO"}, "; ".join(STATE.report.summary()))
        return {"FINISHED"}


class RECON_OT_install_torch(BackgroundTaskOperator, bpy.types.Operator):
    bl_idname = "recon.install_torch"
    bl_label = "Install PyTorch"
    bl_description = (
        "Download PyTorch with pip into this extension's user folder (never into Blender's own "
        "Python); needs online access"
    )

    variant: EnumProperty(name="Build", items=VARIANT_ITEMS, default="auto")

    @classmethod
    def poll(cls, context):
        return STATE.install is None

    def execute(self, context):
        prefs = preferences.get_preferences(context)
        if prefs.python:
            self.report({"ERROR"}, (
                f"The worker runs {prefs.python}: install torch into that environment with its "
                "own pip, or clear the Worker Python preference to use Blender's Python."
            ))
            return {"CANCELLED"}
        if not bpy.app.online_access:
            self.report({"ERROR"}, (
                "Online access is off. Allow it in Preferences > System > Network, or set the "
                "Worker Python preference to an environment that already has torch."
            ))
            return {"CANCELLED"}
        python = preferences.worker_python(prefs)
        try:
            report = deps.probe(python, worker_extra_paths(prefs))
            if report.pip_version is None:
                raise DependencyError(deps.pip_missing_message(python))
            plan = deps.plan_torch_install(
                torch_folder(), self.variant, cuda_driver=deps.detect_cuda_driver(),
                pip_version=report.pip_version,
            )
            run = deps.PipRun(python, plan.pip_args, install_log_path())
            run.start()
        except DependencyError as exc:
            STATE.outcome, STATE.failed = str(exc), True
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        STATE.install, STATE.description = run, plan.description
        STATE.status, STATE.outcome, STATE.failed = run.poll(), "", False
        return self._wait_or_poll(context)

    def _task_running(self) -> bool:
        run = STATE.install
        if run is None:  # cancelled from the preferences or the add-on was disabled
            return False
        STATE.status = run.poll()
        return STATE.status.state == "running"

    def _task_wait(self) -> None:
        try:
            STATE.install.wait()
        except (DependencyError, Cancelled):
            pass  # the outcome is read from the run's final state in _finish

    def _task_cancel(self) -> None:
        if STATE.install is not None:
            STATE.install.cancel()

    def _finish(self, context):
        run, STATE.install = STATE.install, None
        if run is None:
            return {"CANCELLED"}
        STATE.status = status = run.poll()
        if status.state == "done":
            deps.remove_shadowing_numpy(torch_folder())
            check(preferences.get_preferences(context))
            STATE.outcome = f"Installed: {STATE.description}"
            self.report({"INFO"}, STATE.outcome)
            result = {"FINISHED"}
        elif status.state == "cancelled":
            STATE.outcome = "Installation cancelled; press Install PyTorch to start again."
            self.report({"WARNING"}, STATE.outcome)
            result = {"CANCELLED"}
        else:
            STATE.outcome, STATE.failed = run.failure_message(), True
            self.report({"ERROR"}, STATE.outcome)
            result = {"CANCELLED"}
        redraw_preferences(context)
        return result


class RECON_OT_cancel_torch_install(bpy.types.Operator):
    bl_idname = "recon.cancel_torch_install"
    bl_label = "Cancel Install"
    bl_description = "Stop the PyTorch download/installation"

    @classmethod
    def poll(cls, context):
        return STATE.install is not None

    def execute(self, context):
        STATE.install.cancel()
        return {"FINISHED"}


class RECON_OT_open_install_log(bpy.types.Operator):
    bl_idname = "recon.open_install_log"
    bl_label = "Open Install Log"
    bl_description = "Open pip's full output of the last PyTorch installation"

    @classmethod
    def poll(cls, context):
        return install_log_path().is_file()

    def execute(self, context):
        bpy.ops.wm.path_open(filepath=str(install_log_path()))
        return {"FINISHED"}


CLASSES = (
    RECON_OT_check_dependencies,
    RECON_OT_install_torch,
    RECON_OT_cancel_torch_install,
    RECON_OT_open_install_log,
)

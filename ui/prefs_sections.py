"""Preferences sections: what the worker's Python has (with the fix offered) and the model list.

Drawing never runs a process: the dependency box shows the last Check Dependencies (or install)
result kept by :mod:`..operators.dependencies`; the model list only looks at file sizes.
"""

from __future__ import annotations

import textwrap

import bpy

from ..core import checkpoints
from ..core.dust3r.registry import LICENCE
from ..operators import dependencies, weights
from . import preferences

_WRAP = 90
_BUNDLED = ("scipy", "pillow", "pycolmap")


def draw(layout, prefs) -> None:
    """Both sections, for ``AddonPreferences.draw``."""
    draw_dependencies(layout, prefs)
    draw_models(layout, prefs)


def _text(layout, text: str, icon: str = "NONE") -> None:
    """A long message as several labels (Blender does not wrap labels)."""
    for k, line in enumerate(textwrap.wrap(text, _WRAP) or [""]):
        layout.label(text=line, icon=icon if k == 0 else "BLANK1")


def draw_dependencies(layout, prefs) -> None:
    state = dependencies.STATE
    box = layout.box()
    header = box.row()
    header.label(text="Dependencies", icon="SCRIPTPLUGINS")
    header.operator("recon.check_dependencies", text="Check", icon="FILE_REFRESH")
    if state.install is not None:
        status = state.install.poll()
        row = box.row()
        row.progress(factor=status.fraction, type="BAR",
                     text=status.message or "Installing PyTorch")
        row.operator("recon.cancel_torch_install", text="", icon="CANCEL")
    elif state.error:
        _text(box, state.error, "ERROR")
    elif state.report is None:
        box.label(text="Not checked yet: press Check to see what the worker's Python has.")
    else:
        _draw_report(box, state.report, prefs)
    if state.outcome:
        _text(box, state.outcome, "ERROR" if state.failed else "CHECKMARK")
    if dependencies.install_log_path().is_file():
        box.operator("recon.open_install_log", icon="TEXT")


def _draw_report(box, report, prefs) -> None:
    box.label(text=f"Worker Python {report.python_version}: {report.python}")
    grid = box.grid_flow(columns=3, even_columns=True)
    for name, status in report.modules.items():
        text = f"{name} {status.version}" if status.version is not None else f"{name}: missing"
        grid.label(text=text, icon="CHECKMARK" if status.version is not None else "ERROR")
    if report.torch_error:
        _text(box, f"torch does not work ({report.torch_error}): install it again.", "ERROR")
        _draw_torch_fix(box, prefs)
    elif report.has("torch"):
        device = report.cuda_device or {"mps": "Apple GPU (MPS)", "cpu": "CPU only"}.get(
            report.accelerator, report.accelerator)
        box.label(text=f"torch runs on: {device}")
    else:
        _draw_torch_fix(box, prefs)
    missing = [name for name in _BUNDLED if not report.has(name)]
    if missing:
        _text(box, (f"{', '.join(missing)} missing: the extension zip for your platform bundles "
                    "them; reinstall from that zip, or use a Worker Python that has them."),
              "ERROR")


def _draw_torch_fix(box, prefs) -> None:
    if prefs.python:
        _text(box, (f"torch is missing in {prefs.python}. Install it into that environment with "
                    "its own pip (pip install torch==2.13.0), or clear Worker Python to use "
                    "Blender's Python with Install PyTorch."), "ERROR")
        return
    _text(box, ("torch is missing: reconstruction needs it. Install PyTorch downloads it into "
                "this extension's folder (CPU build about 200 MB; CUDA build several GB). Or set "
                "Worker Python to an environment that already has torch."), "ERROR")
    row = box.row()
    row.enabled = bpy.app.online_access and dependencies.STATE.install is None
    for variant, label in (("auto", "Install PyTorch"), ("cpu", "CPU Build"),
                           ("cuda", "CUDA Build")):
        row.operator("recon.install_torch", text=label).variant = variant
    if not bpy.app.online_access:
        box.label(text="Online access is off: allow it in System > Network to install.",
                  icon="INFO")


def draw_models(layout, prefs) -> None:
    state = weights.STATE
    folder = preferences.weights_folder(prefs)
    box = layout.box()
    box.label(text="DUSt3R Models", icon="OUTLINER_DATA_LIGHTPROBE")
    box.label(text=f"Folder: {folder}")
    _text(box, f"Licence of the weights: {LICENCE}.", "INFO")
    for status in checkpoints.folder_status(folder):
        info = status.info
        row = box.row()
        row.label(text=info.name, icon="CHECKMARK" if status.path else "BLANK1")
        if status.path is not None:
            row.label(text=f"{status.size_bytes / 1e9:.2f} GB")
            continue
        if state.name == info.name and state.token is None:  # Locate is checking a file
            row.label(text=state.message, icon="SORTTIME")
            continue
        if state.name == info.name:
            row.progress(factor=state.fraction, type="BAR", text=state.message)
            row.operator("recon.cancel_weights_download", text="", icon="CANCEL")
            continue
        row.label(text=f"about {info.approx_size_bytes / 1e9:.1f} GB")
        text = "Resume" if status.partial_bytes else "Download"
        row.operator("recon.download_weights", text=text, icon="IMPORT").name = info.name
        row.operator("recon.locate_weights", text="Locate", icon="FILEBROWSER").name = info.name
    if not bpy.app.online_access:
        _text(box, ("Online access is off (System > Network): Download tells which file to get "
                    "from where and where to put it; or use Locate for a file you have."), "INFO")
    if state.outcome:
        _text(box, state.outcome, "ERROR" if state.failed else "CHECKMARK")

"""Add-on preferences: worker interpreter, device, weights and cache folders, jobs kept.

Empty folder preferences mean "automatic": a per-extension user folder from
``bpy.utils.extension_path_user`` when Blender loaded us as an extension, else (loaded from source,
as tests and the headless script do) a ``photo_recon`` folder in Blender's user data files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from .. import __package__ as ADDON_PACKAGE

DEVICE_ITEMS = (
    ("auto", "Auto", "CUDA if available, then Apple MPS, then the CPU"),
    ("cpu", "CPU", "Always run on the CPU"),
    ("cuda", "CUDA", "NVIDIA GPU (needs a CUDA build of torch in the worker Python)"),
    ("mps", "MPS", "Apple Silicon GPU"),
)


class ReconPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    python: StringProperty(
        name="Worker Python",
        description="Python interpreter that runs reconstruction jobs; empty = Blender's own",
        subtype="FILE_PATH",
        default="",
    )
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    weights_dir: StringProperty(
        name="Weights Folder",
        description="Folder holding DUSt3R checkpoints (.pth or .safetensors); empty = automatic",
        subtype="DIR_PATH",
        default="",
    )
    cache_dir: StringProperty(
        name="Cache Folder",
        description="Folder for job folders and cached network predictions; empty = automatic",
        subtype="DIR_PATH",
        default="",
    )
    keep_jobs: IntProperty(
        name="Keep Jobs",
        description=(
            "Job folders (result, logs) kept in the cache folder; older ones are deleted when a "
            "new job starts, except those a scene of the open .blend file uses"
        ),
        default=10,
        min=1,
        soft_max=100,
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "python")
        layout.label(text=f"Worker Python in use: {worker_python(self)}")
        layout.prop(self, "device")
        layout.prop(self, "weights_dir")
        layout.label(text=f"Weights folder in use: {weights_folder(self)}")
        layout.prop(self, "cache_dir")
        layout.label(text=f"Cache folder in use: {cache_folder(self)}")
        layout.prop(self, "keep_jobs")
        from . import prefs_sections  # imports operators that import this module: not on top

        prefs_sections.draw(layout, self)


_DEFAULTS = SimpleNamespace(python="", device="auto", weights_dir="", cache_dir="", keep_jobs=10)
"""Stand-in with the default values, for when the add-on is registered but not enabled through
Blender's preferences (loaded from source by a script)."""


def get_preferences(context: bpy.types.Context | None = None):
    """The add-on preferences, or an object with the default values when there are none."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None and addon.preferences else _DEFAULTS


def _user_folder(name: str) -> Path:
    """``<extension user folder>/<name>``, created; see the module docstring for the fallback."""
    try:
        base = Path(bpy.utils.extension_path_user(ADDON_PACKAGE, create=True))
    except ValueError:  # "package does not name an extension": loaded from source
        base = Path(bpy.utils.user_resource("DATAFILES", path="photo_recon", create=True))
    folder = base / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def worker_python(prefs) -> str:
    """Interpreter for the worker process: the preference, else Blender's own Python."""
    return bpy.path.abspath(prefs.python) if prefs.python else sys.executable


def weights_folder(prefs) -> Path:
    return Path(bpy.path.abspath(prefs.weights_dir)) if prefs.weights_dir else _user_folder("weights")


def cache_folder(prefs) -> Path:
    return Path(bpy.path.abspath(prefs.cache_dir)) if prefs.cache_dir else _user_folder("cache")


CLASSES = (ReconPreferences,)

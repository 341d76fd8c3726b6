"""Install a built extension zip into Blender (the bpy module), use it, and remove it.

Run by ``test_install.py`` in its own interpreter with ``BLENDER_USER_RESOURCES`` pointing at an
empty folder (so the install never meets the source-loaded add-on of other tests, and never
touches the real user folder):

    python install_check.py EXTENSION.zip WORK_DIR REPORT.json

Each step records what it saw into REPORT.json; the test asserts on it. The process ends with
``os._exit`` after flushing, because bpy 4.5 can hang in its exit handlers.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path

import bpy
import addon_utils

PKG_ID = "photo_recon"
REPO = "user_default"
MODULE = f"bl_ext.{REPO}.{PKG_ID}"


def main(zip_path: str, work_dir: Path, out: dict) -> None:
    extensions = Path(bpy.utils.user_resource("EXTENSIONS"))
    out["extension_dir"] = str(extensions / REPO / PKG_ID)

    result = bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo=REPO, enable_on_install=True
    )
    out["install_result"] = sorted(result)
    out["enabled_after_install"] = MODULE in bpy.context.preferences.addons
    out["operators_registered"] = {
        name: hasattr(bpy.types, cls)
        for name, cls in (("check", "RECON_OT_check_dependencies"),
                          ("install_torch", "RECON_OT_install_torch"),
                          ("reconstruct", "RECON_OT_reconstruct"))
    }

    addon = sys.modules[MODULE]
    out["addon_file"] = addon.__file__
    job_mod = importlib.import_module(f"{MODULE}.core.job")
    config_mod = importlib.import_module(f"{MODULE}.core.config")
    deps_mod = importlib.import_module(f"{MODULE}.core.deps")
    dependencies = importlib.import_module(f"{MODULE}.operators.dependencies")
    preferences = importlib.import_module(f"{MODULE}.ui.preferences")

    prefs = preferences.get_preferences(bpy.context)
    paths = dependencies.worker_extra_paths(prefs)
    out["worker_extra_paths"] = paths
    out["worker_root"] = str(job_mod.EXTENSION_ROOT)

    # What the worker's interpreter imports, with exactly the worker's PYTHONPATH.
    report = deps_mod.probe(
        preferences.worker_python(prefs), [str(job_mod.EXTENSION_ROOT), *paths],
        modules={"recon_dummy_dep": "recon_dummy_dep", "core": "core"},
    )
    out["probe"] = {name: [m.version, m.location] for name, m in report.modules.items()}

    config = config_mod.JobConfig(
        images=(), backend="synthetic", options={"n_images": 3, "size": 32}, seed=7
    )
    job = job_mod.Job(config, work_dir / "job", extra_paths=paths)
    job.start()
    result = job.wait()
    out["worker_python"] = job.python
    out["job_state"] = job.poll().state
    out["result_dir"] = str(work_dir / "job" / "result")
    out["n_views"] = len(result.images)

    # The operator in the installed copy answers too (probe of Blender's Python, headless).
    out["check_result"] = sorted(bpy.ops.recon.check_dependencies())

    addon_utils.disable(MODULE, default_set=True)
    out["enabled_after_disable"] = MODULE in bpy.context.preferences.addons
    out["check_registered_after_disable"] = hasattr(bpy.types, "RECON_OT_check_dependencies")

    result = bpy.ops.extensions.package_uninstall(
        repo_index=_repo_index(REPO), pkg_id=PKG_ID
    )
    out["uninstall_result"] = sorted(result)


def _repo_index(module: str) -> int:
    repos = bpy.context.preferences.extensions.repos
    return next(i for i, repo in enumerate(repos) if repo.module == module)


if __name__ == "__main__":
    zip_arg, work_arg, report_arg = sys.argv[1:4]
    report_out: dict = {}
    code = 0
    try:
        main(zip_arg, Path(work_arg), report_out)
    except Exception:  # recorded for the test, which fails with the traceback
        report_out["error"] = traceback.format_exc()
        code = 1
    Path(report_arg).write_text(json.dumps(report_out, indent=1))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

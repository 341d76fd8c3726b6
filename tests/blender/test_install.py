"""Build the zip with Blender's builder, install it into an isolated user folder, use it, remove it.

The zip bundles a small pure-Python wheel made in ``tmp_path`` (nothing is downloaded). In a
fresh interpreter (``install_check.py``), the real ``bpy`` module installs and enables the zip,
the installed copy's worker runs a synthetic reconstruction and sees the bundled wheel, and the
extension is disabled and uninstalled. This test then checks the outcome and that nothing is
left behind. The same test runs under bpy 5.0 with ``make test-bpy50``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import synthetic
from core.config import JobConfig
from core.progress import Progress
from core.result import SceneResult
from dummy_wheel import DUMMY_NAME, DUMMY_VERSION, build_dummy_wheel

bpy = pytest.importorskip("bpy")

from wheels import build as wheel_build  # noqa: E402 (after the bpy skip: needs the bpy package)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECK_SCRIPT = Path(__file__).with_name("install_check.py")
PKG_ID = "photo_recon"


def _blender_platform() -> str:
    machine = {"x86_64": "x64", "amd64": "x64", "arm64": "arm64", "aarch64": "arm64"}
    system = {"Linux": "linux", "Windows": "windows", "Darwin": "macos"}
    return f"{system[platform.system()]}-{machine[platform.machine().lower()]}"


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    """The extension zip for this platform, bundling the dummy wheel, validated by Blender."""
    work = tmp_path_factory.mktemp("build")
    wheel = build_dummy_wheel(work / "wheels")
    stage = wheel_build.stage_extension(REPO_ROOT, work / "stage", [wheel], [_blender_platform()])
    blender_ext = wheel_build.find_blender_ext()
    zips = wheel_build.build_zips(blender_ext, stage, work / "dist")
    assert [z.name.rsplit("-", 1)[-1] for z in zips] == [
        _blender_platform().replace("-", "_") + ".zip"
    ]
    wheel_build.validate_zip(blender_ext, zips[0])
    return zips[0]


def test_zip_contents(built_zip):
    import zipfile

    names = zipfile.ZipFile(built_zip).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert any(n.startswith(f"wheels/{DUMMY_NAME}-") for n in names)
    assert "core/deps.py" in names and "operators/dependencies.py" in names
    assert not [n for n in names if n.startswith(("tests/", ".venv", "build/", "dist/"))]
    assert not [n for n in names if "numpy" in n]


def test_install_run_uninstall_leaves_nothing(built_zip, tmp_path):
    user = tmp_path / "blender-user"
    report_path = tmp_path / "report.json"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user))
    env.pop("PYTHONPATH", None)  # the installed copy must not lean on the checkout
    proc = subprocess.run(
        [sys.executable, str(CHECK_SCRIPT), str(built_zip), str(tmp_path), str(report_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert report_path.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert "error" not in report, report["error"] + proc.stderr[-3000:]

    ext_dir = Path(report["extension_dir"])
    local = user / "extensions" / ".local"
    assert report["install_result"] == ["FINISHED"]
    assert report["enabled_after_install"]
    assert all(report["operators_registered"].values()), report["operators_registered"]
    assert Path(report["addon_file"]).parent == ext_dir
    assert Path(report["worker_root"]) == ext_dir

    # The worker's interpreter imports the bundled wheel from Blender's wheel folder and our
    # code from the installed copy.
    dummy_version, dummy_location = report["probe"][DUMMY_NAME]
    assert dummy_version == DUMMY_VERSION
    assert Path(dummy_location).is_relative_to(local)
    assert Path(report["probe"]["core"][1]).is_relative_to(ext_dir)
    assert any(Path(p).is_relative_to(local) for p in report["worker_extra_paths"])

    # The installed worker computed the same scene as the checkout's synthetic backend.
    assert report["job_state"] == "done" and report["n_views"] == 3
    installed = SceneResult.load(report["result_dir"])
    config = JobConfig(images=(), backend="synthetic", options={"n_images": 3, "size": 32}, seed=7)
    expected = synthetic.run(config, Progress())
    for got, want in zip(installed.images, expected.images, strict=True):
        np.testing.assert_array_equal(got.cam2world, want.cam2world)
        np.testing.assert_array_equal(got.pts3d_world, want.pts3d_world)
    assert report["check_result"] == ["FINISHED"]

    # Disabled, then removed: no classes, no extension folder, no unpacked wheel.
    assert not report["enabled_after_disable"]
    assert not report["check_registered_after_disable"]
    assert report["uninstall_result"] == ["FINISHED"]
    assert not ext_dir.exists()
    leftovers = [p for p in local.rglob("*") if DUMMY_NAME in p.name] if local.exists() else []
    assert leftovers == []
    assert not list(user.rglob(f"*{DUMMY_NAME}*"))
    # Blender also deletes the extension's user folder (torch installed by the preferences,
    # automatic weights folder) on uninstall; the README says so.
    assert not list(user.rglob(f"*{PKG_ID}*"))

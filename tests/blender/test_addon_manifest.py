"""blender_manifest.toml passes Blender's own validator, and the built zip holds only the add-on.

The validator is ``bl_pkg/cli/blender_ext.py`` inside the installed ``bpy`` package (stdlib only,
run with this interpreter; never copied into the repository), given Blender's own tag list as
``blender --command extension validate`` does.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _bpy_scripts() -> Path:
    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        pytest.skip("the bpy module is not installed")
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    assert found, f"blender_ext.py not found in the bpy package at {Path(spec.origin).parent}"
    return found[-1].parents[3]


def _blender_ext(*args: str) -> subprocess.CompletedProcess:
    scripts = _bpy_scripts()
    tags = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    command = [sys.executable, str(scripts / "addons_core/bl_pkg/cli/blender_ext.py"), *args]
    if args[0] == "validate":
        command.insert(3, f"--valid-tags={tags}")
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_manifest_passes_blenders_validator():
    run = _blender_ext("validate", str(REPO_ROOT))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success" in run.stdout


def test_validator_rejects_a_tagline_with_a_trailing_period(tmp_path):
    # Shows that the check above can fail: the same manifest with one rule broken.
    manifest = (REPO_ROOT / "blender_manifest.toml").read_text()
    tagline = next(line for line in manifest.splitlines() if line.startswith("tagline"))
    (tmp_path / "blender_manifest.toml").write_text(manifest.replace(tagline, tagline[:-1] + '."'))
    shutil.copy(REPO_ROOT / "__init__.py", tmp_path)
    run = _blender_ext("validate", str(tmp_path))
    assert run.returncode != 0
    assert "tagline" in run.stdout + run.stderr


def test_built_zip_holds_the_add_on_and_no_development_files(tmp_path):
    run = _blender_ext("build", "--source-dir", str(REPO_ROOT), "--output-dir", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    (zip_path,) = tmp_path.glob("photo_recon-*.zip")
    names = zipfile.ZipFile(zip_path).namelist()
    for needed in ("__init__.py", "blender_manifest.toml", "core/result.py", "core/worker.py",
                   "operators/reconstruct.py", "operators/cli.py", "ui/panels.py"):
        assert needed in names
    tops = {name.split("/")[0] for name in names}
    assert not tops & {"tests", ".ci", ".git", "Makefile", "pytest.ini", "demo_out", ".venv"}
    assert not [n for n in names if n.startswith("requirements") or "__pycache__" in n]
    assert not [n for n in names if n.startswith("wheels/") and not n.endswith(".whl")]

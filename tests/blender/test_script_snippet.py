"""The README's snippet for one's own script with the ``bpy`` module, run as written.

The ``bpy`` module enables no add-on, so the snippet loads it with ``operators/cli.py``'s
``load_addon`` (the enabled extension, else this checkout). It runs in a fresh interpreter and
must also end by itself: bpy 4.5 hangs at exit while a source-loaded add-on is registered, which
``load_addon`` prevents by unregistering it at exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

bpy = pytest.importorskip("bpy")

SAMPLE_PHOTOS = REPO_ROOT / "tests" / "data" / "sample_scene" / "images"

README_SNIPPET = """\
import sys
sys.path.insert(0, "/path/to/photo_recon/operators")  # the checkout's operators folder
import bpy
import cli
cli.load_addon(bpy)  # the enabled extension, else the checkout's add-on

bpy.context.scene.recon.backend = "classical"
bpy.ops.recon.reconstruct(directory="/path/to/photos")
bpy.ops.wm.save_as_mainfile(filepath="/path/to/scene.blend")
"""
"""Verbatim in README.md (Headless use); the test fills in the three paths."""


def _run_snippet(photos: Path, blend: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    code = (README_SNIPPET.replace("/path/to/photo_recon/operators", str(REPO_ROOT / "operators"))
            .replace("/path/to/photos", str(photos)).replace("/path/to/scene.blend", str(blend)))
    script = tmp_path / "my_script.py"
    script.write_text(code)
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "user")}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)


def test_readme_snippet_reconstructs_and_saves(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("pycolmap")
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):  # three of the bundled sample's 16 photos keep it quick
        shutil.copy(SAMPLE_PHOTOS / f"view_{k:02d}.jpg", photos)
    blend = tmp_path / "scene.blend"
    run = _run_snippet(photos, blend, tmp_path)  # also: it ends by itself, no os._exit
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

    with bpy.data.libraries.load(str(blend)) as (data_from, _data_to):
        objects, collections = list(data_from.objects), list(data_from.collections)
    assert "Recon photos" in collections
    assert {f"view_{k:02d}" for k in range(3)} <= set(objects)  # one camera per photo
    assert "Recon photos points" in objects
    (job,) = (tmp_path / "user").rglob("jobs/*/job.json")
    assert '"backend": "classical"' in job.read_text()


def test_readme_snippet_raises_the_reason(tmp_path):
    """A failing job raises RuntimeError with the operator's reason; nothing is saved."""
    (tmp_path / "empty").mkdir()
    blend = tmp_path / "scene.blend"
    run = _run_snippet(tmp_path / "empty", blend, tmp_path)
    assert run.returncode == 1
    assert "RuntimeError: Error: No images (.jpg, .png, .heic, ...) found in" in run.stderr
    assert not blend.exists()


def test_the_readme_shows_this_snippet_verbatim():
    assert README_SNIPPET in (REPO_ROOT / "README.md").read_text()

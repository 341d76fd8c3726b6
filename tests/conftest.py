"""Test setup shared by all tests.

* The repository root goes on ``sys.path`` so ``import core`` works as in the worker, and
  ``tests/`` too, so shared test helpers (``import synthetic_pairs``) import by name.
* Blender's user folder is redirected to a temporary directory before ``bpy`` is imported, so tests
  never touch the real ``~/.config/blender``.
* ``load_addon()`` imports the extension from source under the package name ``photo_recon``
  (relative imports work as they do when Blender loads it as ``bl_ext.<repo>.photo_recon``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
ADDON_PACKAGE = "photo_recon"

_OWN_BLENDER_USER = None
if "BLENDER_USER_RESOURCES" not in os.environ:
    _OWN_BLENDER_USER = tempfile.mkdtemp(prefix="recon-blender-user-")
    os.environ["BLENDER_USER_RESOURCES"] = _OWN_BLENDER_USER
for _path in (REPO_ROOT, REPO_ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def pytest_sessionfinish(session, exitstatus):
    """Remove the temporary Blender user folder this run made (job folders, caches)."""
    if _OWN_BLENDER_USER is not None:
        shutil.rmtree(_OWN_BLENDER_USER, ignore_errors=True)


def load_addon():
    """Import the extension package from the repository (once) and return it."""
    if ADDON_PACKAGE in sys.modules:
        return sys.modules[ADDON_PACKAGE]
    spec = importlib.util.spec_from_file_location(
        ADDON_PACKAGE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[ADDON_PACKAGE] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def registered_addon():
    """The add-on registered and enabled, so that its AddonPreferences exist; yields the
    preferences and unregisters on exit. bpy is imported here, not at module level, so the
    plain-Python tests never load it."""
    import bpy

    addon = load_addon()
    addon.register()
    entry = bpy.context.preferences.addons.new()
    entry.module = ADDON_PACKAGE
    try:
        yield bpy.context.preferences.addons[ADDON_PACKAGE].preferences
    finally:
        bpy.context.preferences.addons.remove(entry)
        addon.unregister()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout; tests that need it are skipped without it."""
    if not SHARED_DIR.is_dir():
        pytest.skip("../shared is absent (reference data and scenes live there)")
    return SHARED_DIR


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread: the small networks and alignment problems of the tests
    run fastest so, and do not fight other processes for the cores. torch is imported here, not
    at module level, because the bpy 5.0 test environment has no torch. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Preferences operators for dependencies and weights, headless with the real bpy module.

The bpy module runs with online access off (as a user who did not allow it), so these tests
also show the offline behaviour: Install PyTorch and Download refuse with a message saying
what to do, nothing is started or written. Locate checks files with the worker's Python.

Install PyTorch is also run with online access on and pip kept off the network (``PIP_NO_INDEX``,
``PIP_FIND_LINKS`` = a folder of this test): once with nothing to install (pip fails: its output
is in the log and the error names it), once with a stand-in ``torch`` wheel that requires numpy
(the whole pipeline runs: pip into the extension folder, the pulled-in numpy removed, re-check).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import load_addon, registered_addon
from dummy_wheel import build_dummy_wheel

bpy = pytest.importorskip("bpy")

load_addon()
from photo_recon.core.deps import TORCH_VERSION  # noqa: E402
from photo_recon.core.dust3r.registry import WEIGHTS  # noqa: E402
from photo_recon.core.progress import CancelToken  # noqa: E402
from photo_recon.operators import dependencies, weights  # noqa: E402

DPT = WEIGHTS["DUSt3R_ViTLarge_BaseDecoder_512_dpt"]


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    with registered_addon() as prefs:
        yield prefs


@pytest.fixture
def weights_dir(prefs, tmp_path) -> Path:
    prefs.weights_dir = str(tmp_path / "weights")
    yield tmp_path / "weights"
    prefs.property_unset("weights_dir")
    weights.STATE.outcome, weights.STATE.failed = "", False


def test_online_access_is_off_here():
    assert not bpy.app.online_access  # the premise of the offline tests below


def test_check_dependencies_probes_the_worker_python(prefs):
    assert bpy.ops.recon.check_dependencies() == {"FINISHED"}
    report = dependencies.STATE.report
    assert report.python == sys.executable
    assert report.has("torch") == (importlib.util.find_spec("torch") is not None)
    assert report.has("numpy") and report.pip_version is not None


def test_install_torch_offline_is_refused_with_the_way_out(prefs):
    with pytest.raises(RuntimeError, match="Online access is off.*System > Network"):
        bpy.ops.recon.install_torch(variant="cpu")
    assert dependencies.STATE.install is None
    assert not any(dependencies.torch_folder().iterdir())


def test_install_torch_for_an_external_python_points_to_its_pip(prefs):
    prefs.python = sys.executable
    try:
        with pytest.raises(RuntimeError, match="install torch into that environment"):
            bpy.ops.recon.install_torch()
        assert dependencies.worker_extra_paths(prefs) == []
    finally:
        prefs.property_unset("python")
    assert str(dependencies.torch_folder()) in dependencies.worker_extra_paths(prefs)


def test_download_offline_says_what_to_get_from_where(weights_dir):
    with pytest.raises(RuntimeError) as info:
        bpy.ops.recon.download_weights(name=DPT.name)
    message = str(info.value)
    assert DPT.pth_url in message and str(weights_dir / DPT.pth_file) in message
    assert "CC BY-NC-SA 4.0" in message
    assert weights.STATE.failed and weights.STATE.thread is None
    assert not list(weights_dir.glob("*.pth*"))


def test_download_offline_with_the_file_present_is_fine(weights_dir):
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / DPT.pth_file).write_bytes(b"present")
    assert bpy.ops.recon.download_weights(name=DPT.name) == {"FINISHED"}


def test_unknown_checkpoint_name_is_refused(weights_dir):
    with pytest.raises(RuntimeError, match="Unknown checkpoint 'nope'"):
        bpy.ops.recon.download_weights(name="nope")


def test_locate_refuses_a_file_that_is_not_a_checkpoint(weights_dir, tmp_path):
    bogus = tmp_path / "DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth"
    bogus.write_text("not a checkpoint")
    # With torch: the worker's loader refuses the file; without: the message says to install it.
    reason = (rf"{bogus.name} is not a PyTorch checkpoint: it starts with b.not a checkpoint"
              if importlib.util.find_spec("torch") else "needs torch.*Install PyTorch")
    with pytest.raises(RuntimeError, match=reason):
        bpy.ops.recon.locate_weights(name=DPT.name, filepath=str(bogus))
    assert not list(weights_dir.glob("**/*.pth"))
    assert weights.STATE.failed


def test_locate_names_a_missing_file(weights_dir, tmp_path):
    with pytest.raises(RuntimeError, match="elsewhere.pth does not exist"):
        bpy.ops.recon.locate_weights(name=DPT.name, filepath=str(tmp_path / "elsewhere.pth"))


@pytest.fixture
def online_local_pip(prefs, tmp_path, monkeypatch):
    """Online access on; pip may only use the returned (empty) folder. Afterwards the torch
    folder is emptied, so later tests' workers never see what was installed here."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    bpy.context.preferences.system.use_online_access = True
    yield links
    bpy.context.preferences.system.use_online_access = False
    for path in dependencies.torch_folder().iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    dependencies.STATE.outcome, dependencies.STATE.failed = "", False


def test_install_torch_pip_failure_is_logged_and_reported(online_local_pip):
    assert bpy.app.online_access
    with pytest.raises(RuntimeError) as info:
        bpy.ops.recon.install_torch(variant="cpu")
    log_path = dependencies.install_log_path()
    message = str(info.value)
    assert f"torch=={TORCH_VERSION}" in message and str(log_path) in message
    log_text = log_path.read_text()
    assert "--target" in log_text.splitlines()[0]  # the command, then pip's own output
    assert "No matching distribution found" in log_text
    assert dependencies.STATE.failed and dependencies.STATE.install is None
    assert not any(dependencies.torch_folder().iterdir())
    assert bpy.ops.recon.check_dependencies() == {"FINISHED"}  # Blender carries on


def test_install_torch_pipeline_with_a_stand_in_wheel(online_local_pip):
    build_dummy_wheel(online_local_pip, "torch", TORCH_VERSION, requires=("numpy",))
    build_dummy_wheel(online_local_pip, "numpy", "9.9.9")
    assert bpy.ops.recon.install_torch(variant="cpu") == {"FINISHED"}
    folder = dependencies.torch_folder()
    assert (folder / "torch" / "__init__.py").is_file()
    assert not list(folder.glob("numpy*"))  # pulled in by pip, removed: Blender's stays
    report = dependencies.STATE.report  # re-checked after the install
    assert report.modules["torch"].version == TORCH_VERSION
    assert Path(report.modules["torch"].location).is_relative_to(folder)
    assert report.modules["numpy"].version != "9.9.9"
    assert report.torch_error.startswith("AttributeError")  # a stand-in, not a working torch
    assert "Installed" in dependencies.STATE.outcome and not dependencies.STATE.failed


def test_ui_path_polls_the_thread_and_esc_cancels_it(weights_dir):
    """What the UI does with Download (headless there are no events, so the test sends them):
    timer ticks poll the thread and pass through while it runs, other events pass through, Esc
    cancels the download's token, and the tick after the thread ended reports its outcome."""
    token = CancelToken()

    def download_until_cancelled():  # stands in for a long download (weights._download)
        while not token.cancelled:
            time.sleep(0.01)
        weights.STATE.outcome, weights.STATE.failed = "cancelled; resumes later", False
        weights.STATE.name = ""

    class Driver(weights._ThreadOperator):
        def __init__(self):
            self.reports = []

        def report(self, kind, message):
            self.reports.append((kind, message))

    driver = Driver()
    weights.STATE.token = token
    weights.STATE.thread = threading.Thread(target=download_until_cancelled, daemon=True)
    weights.STATE.thread.start()
    tick, esc, mouse = (SimpleNamespace(type=t) for t in ("TIMER", "ESC", "MOUSEMOVE"))
    assert driver.modal(bpy.context, tick) == {"PASS_THROUGH"}
    assert driver.modal(bpy.context, mouse) == {"PASS_THROUGH"}
    assert not token.cancelled and weights.STATE.thread.is_alive()
    driver.modal(bpy.context, esc)
    assert token.cancelled
    weights.STATE.thread.join(5.0)
    assert driver.modal(bpy.context, tick) == {"FINISHED"}
    assert driver.reports == [({"INFO"}, "cancelled; resumes later")]
    assert weights.STATE.thread is None

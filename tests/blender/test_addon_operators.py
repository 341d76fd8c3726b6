"""The operators in background mode (real bpy, real worker subprocess, synthetic backend).

Headless, ``bpy.ops.recon.reconstruct`` runs the job synchronously: a failure raises
RuntimeError with the operator's ERROR report, and leaves no new data-block behind. The modal
driver of the UI is exercised by sending it the events a window would.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import load_addon, registered_addon
from tests.blender.conftest import DATA_KINDS

bpy = pytest.importorskip("bpy")

load_addon()
from photo_recon.core.result import SceneResult  # noqa: E402
from photo_recon.operators.reconstruct import RECON_OT_reconstruct  # noqa: E402

BLENDER_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    """Registered and enabled, with the cache folder in a temporary folder."""
    with registered_addon() as prefs:
        prefs.cache_dir = str(tmp_path_factory.mktemp("cache"))
        yield prefs


@pytest.fixture
def scene(addon, clean_data):
    """The scene's settings reset; every data-block a test made is removed afterwards."""
    props = bpy.context.scene.recon
    for name in ("output", "auto_threshold", "conf_threshold", "last_result_dir", "last_collection"):
        props.property_unset(name)
    return props


def _snapshot() -> dict[str, int]:
    return {kind: len(getattr(bpy.data, kind)) for kind in DATA_KINDS}


def _job_dirs(prefs) -> list[Path]:
    jobs = Path(prefs.cache_dir) / "jobs"
    return sorted(jobs.iterdir()) if jobs.is_dir() else []


def _role(collection, role):
    return [o for o in collection.objects if o.get("recon_role") == role]


def _expected_points(result: SceneResult, threshold: float) -> int:
    return sum(int(((im.conf > threshold) & np.isfinite(im.pts3d_world).all(-1)).sum())
               for im in result.images)


def test_reconstruct_builds_cameras_and_points(scene, recon_photos):
    assert bpy.ops.recon.reconstruct(directory=str(recon_photos), backend="synthetic") == {"FINISHED"}
    collection = bpy.data.collections[scene.last_collection]
    assert collection.name == "Recon photos"
    result = SceneResult.load(scene.last_result_dir)
    assert [Path(im.file).name for im in result.images] == ["img0.png", "img1.png", "img2.png"]
    cameras = {o.name: o for o in _role(collection, "camera")}
    assert sorted(cameras) == ["img0", "img1", "img2"]
    for im in result.images:
        expected = im.cam2world @ BLENDER_FROM_OPENCV
        np.testing.assert_allclose(np.array(cameras[im.name].matrix_world), expected, atol=1e-5)
    (points,) = _role(collection, "points")
    assert len(points.data.vertices) == _expected_points(result, result.conf_threshold) > 0


def test_reimport_uses_the_cached_result_only(addon, scene, recon_photos):
    bpy.ops.recon.reconstruct(directory=str(recon_photos), backend="synthetic")
    collection = bpy.data.collections[scene.last_collection]
    result = SceneResult.load(scene.last_result_dir)
    jobs = _job_dirs(addon)
    cameras = _role(collection, "camera")

    scene.output, scene.auto_threshold, scene.conf_threshold = "BOTH", False, 0.0
    assert bpy.ops.recon.reimport() == {"FINISHED"}
    assert _role(collection, "camera") == cameras
    (points,) = _role(collection, "points")
    assert len(points.data.vertices) == _expected_points(result, 0.0)
    assert len(_role(collection, "mesh")) == 1

    scene.output, scene.conf_threshold = "POINTS", 1.0  # synthetic confidence is 1: nothing left
    assert bpy.ops.recon.reimport() == {"FINISHED"}
    assert _role(collection, "points") == [] and _role(collection, "mesh") == []
    assert "confidence threshold" in collection["recon_warnings"]
    assert _job_dirs(addon) == jobs  # no worker ran


def test_old_job_folders_go_except_those_the_open_file_uses(addon, scene, recon_photos, tmp_path):
    cache_dir = addon.cache_dir
    addon.cache_dir, addon.keep_jobs = str(tmp_path / "cache"), 1
    try:
        bpy.ops.recon.reconstruct(directory=str(recon_photos), backend="synthetic")
        first = Path(scene.last_result_dir).parent
        bpy.ops.recon.reconstruct(directory=str(recon_photos), backend="synthetic")
        second = Path(scene.last_result_dir).parent
        # The scene's result was in the first folder when the second job started.
        assert set(_job_dirs(addon)) == {first, second}
        # A photo copy loaded from the second job (as the upright copies are) keeps it too.
        photo = second / "result" / "photo.png"
        bpy.data.images.new("photo", 4, 4).save(filepath=str(photo))
        bpy.data.images.load(str(photo))
        bpy.ops.recon.reconstruct(directory=str(recon_photos), backend="synthetic")
        third = Path(scene.last_result_dir).parent
        assert set(_job_dirs(addon)) == {second, third}
    finally:
        addon.cache_dir = cache_dir
        addon.property_unset("keep_jobs")


def test_show_maps_makes_tagged_images_of_the_map_grid(scene, recon_photos):
    bpy.ops.recon.reconstruct(directory=str(recon_photos), backend="synthetic")
    result = SceneResult.load(scene.last_result_dir)
    assert bpy.ops.recon.show_maps(index=1, kind="CONFIDENCE") == {"FINISHED"}
    tagged = {i["recon_map"]: i for i in bpy.data.images if i.get("recon_result") == scene.last_result_dir}
    assert sorted(tagged) == sorted(f"{k}:{kind}" for k in range(3) for kind in ("DEPTH", "CONFIDENCE"))
    for k, im in enumerate(result.images):
        assert tuple(tagged[f"{k}:DEPTH"].size) == im.size
    count = len(bpy.data.images)
    bpy.ops.recon.show_maps(index=2, kind="DEPTH")  # made once per result
    assert len(bpy.data.images) == count
    with pytest.raises(RuntimeError, match="no photo number 4"):
        bpy.ops.recon.show_maps(index=3)
    # A new result replaces the maps instead of adding "<photo> depth.001" and so on.
    bpy.ops.recon.reconstruct(directory=str(recon_photos), backend="synthetic")
    assert bpy.ops.recon.show_maps(index=0) == {"FINISHED"}
    maps = [i for i in bpy.data.images if "recon_map" in i]
    assert len(maps) == 6 and all(i["recon_result"] == scene.last_result_dir for i in maps)
    assert not [i.name for i in maps if "." in i.name]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{"crash": "exception"}', "synthetic crash requested"),
        ('{"crash": "segfault"}', "worker crashed"),
        ('{"no_such_option": 1}', "Unknown synthetic backend option"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_failing_job_reports_the_error_and_creates_nothing(scene, recon_photos, options, message):
    before = _snapshot()
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.recon.reconstruct(directory=str(recon_photos), backend="synthetic", options_json=options)
    assert _snapshot() == before
    assert scene.last_result_dir == ""


def test_folder_without_photos_is_refused(scene, tmp_path):
    (tmp_path / "readme.txt").write_text("no photos")
    before = _snapshot()
    for folder, message in ((tmp_path, "No images"), (tmp_path / "missing", "does not exist")):
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.recon.reconstruct(directory=str(folder), backend="synthetic")
    assert _snapshot() == before



class _ModalDriver(SimpleNamespace):
    """The modal operator's own methods on a plain object, fed TIMER/ESC events by the test:
    headless there is no event loop (``INVOKE_DEFAULT`` is refused and timers never fire)."""

    _prepare = RECON_OT_reconstruct._prepare
    _start = RECON_OT_reconstruct._start
    modal = RECON_OT_reconstruct.modal
    _finish = RECON_OT_reconstruct._finish

    def report(self, kind, message):
        self.reports.append((kind, message))


def _drive(driver, stop_when=lambda wm: False, limit_s=60.0):
    """Send TIMER events every 0.1 s (ESC once ``stop_when(wm)``); returns (result, seen status
    texts, seen progress values)."""
    wm = bpy.context.window_manager
    texts, fractions = [], []
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        event = SimpleNamespace(type="ESC" if stop_when(wm) else "TIMER")
        outcome = driver.modal(bpy.context, event)
        if outcome != {"PASS_THROUGH"}:
            return outcome, texts, fractions
        texts.append(wm.recon_status)
        fractions.append(wm.recon_progress)
        time.sleep(0.1)
    raise AssertionError("the job did not end")


def _driver(photos, options):
    return _ModalDriver(directory=str(photos), backend="synthetic", options_json=options, reports=[])


def test_modal_driver_shows_progress_and_imports(scene, recon_photos):
    driver = _driver(recon_photos, '{"sleep_per_step": 0.6}')
    driver._start(bpy.context)
    assert bpy.context.window_manager.recon_running and not bpy.ops.recon.reconstruct.poll()
    outcome, texts, fractions = _drive(driver)
    assert outcome == {"FINISHED"}, driver.reports
    assert any("rendering: view 2/3" in t for t in texts)
    assert any("ETA" in t for t in texts)
    assert fractions == sorted(fractions) and any(0.0 < f < 1.0 for f in fractions)
    assert bpy.data.collections[scene.last_collection].name == "Recon photos"
    wm = bpy.context.window_manager
    assert (wm.recon_running, wm.recon_status, wm.recon_progress) == (False, "", 0.0)


@pytest.mark.parametrize("how", ["esc", "cancel_button"])
def test_modal_cancel_stops_the_worker_and_leaves_the_scene(scene, recon_photos, how):
    before = _snapshot()
    driver = _driver(recon_photos, '{"sleep_per_step": 2.0}')
    driver._start(bpy.context)

    stopped_at = []

    def stop_when(wm):
        started = "rendering" in wm.recon_status
        if started and not stopped_at:
            stopped_at.append(time.monotonic())
            if how == "cancel_button":
                assert bpy.ops.recon.cancel() == {"FINISHED"}  # the panel's Cancel button
        return started and how == "esc"

    outcome, _texts, _fractions = _drive(driver, stop_when)
    assert outcome == {"CANCELLED"}
    assert time.monotonic() - stopped_at[0] < 3.0  # the worker's 2 s grace, then terminated
    assert driver._job.process.poll() is not None  # no worker left
    assert driver.reports[-1][0] == {"WARNING"} and "cancelled" in driver.reports[-1][1]
    assert _snapshot() == before and scene.last_result_dir == ""
    assert not bpy.context.window_manager.recon_running

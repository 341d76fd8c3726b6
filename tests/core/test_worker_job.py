"""A full job through the real worker subprocess: result, progress lines, re-raised errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core.config import JobConfig
from core.errors import InputError, WorkerError
from core.job import Job, JobStatus, prune_job_folders, run_job
from core.progress import Progress
from core.result import SceneResult
from core.worker import run as run_in_process


def _synthetic(**options) -> JobConfig:
    return JobConfig(images=(), backend="synthetic", options={"size": 32, **options}, seed=3)


def _assert_same_result(a: SceneResult, b: SceneResult) -> None:
    assert len(a.images) == len(b.images)
    assert (a.backend, a.conf_kind, a.conf_threshold, a.warnings) == (b.backend, b.conf_kind, b.conf_threshold, b.warnings)
    for x, y in zip(a.images, b.images):
        assert (x.file, tuple(x.photo_size), x.size) == (y.file, tuple(y.photo_size), y.size)
        for name in ("K", "cam2world", "photo_from_map", "pts3d_world", "conf", "colors", "depth"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)


def test_full_synthetic_job_matches_the_in_process_run(tmp_path):
    job = _synthetic(n_images=5)
    statuses: list[JobStatus] = []
    result = run_job(job, tmp_path / "job", progress_cb=statuses.append)
    _assert_same_result(result, run_in_process(job, Progress()))
    assert statuses[-1].state == "done" and statuses[-1].fraction == 1.0
    assert (tmp_path / "job" / "result" / "result.json").is_file()
    assert not (tmp_path / "job" / "error.json").exists()


def test_progress_lines_arrive_in_order_and_reach_one(tmp_path):
    job = Job(_synthetic(n_images=6, sleep_per_step=0.3), tmp_path / "job")
    job.start()
    seen = []
    job.wait(progress_cb=seen.append, poll_interval=0.05)
    # Several distinct running reports were seen while the worker ran, not only the end state.
    running = [s for s in seen if s.state == "running" and s.stage == "rendering"]
    assert len({s.message for s in running}) >= 3
    assert any(s.eta_s is not None and s.eta_s > 0 for s in running)
    lines = [json.loads(l) for l in (tmp_path / "job" / "progress.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"stage", "fraction", "message", "time"}
    fractions = [l["fraction"] for l in lines]
    times = [l["time"] for l in lines]
    assert fractions == sorted(fractions) and times == sorted(times)
    assert lines[0]["stage"] == "starting" and lines[-1] == {**lines[-1], "stage": "done", "fraction": 1.0}
    assert [l["message"] for l in lines if l["stage"] == "rendering"][:6] == [f"view {k}/6" for k in range(1, 7)]


def test_result_file_backend_reloads_a_saved_result(tmp_path):
    original = run_in_process(_synthetic(n_images=2), Progress())
    original.save(tmp_path / "saved")
    job = JobConfig(images=(), backend="result_file", options={"path": str(tmp_path / "saved")})
    _assert_same_result(run_job(job, tmp_path / "job"), original)


def test_unknown_backend_option_is_an_input_error_from_the_worker(tmp_path):
    with pytest.raises(InputError, match="Unknown synthetic backend option.*n_imagez"):
        run_job(_synthetic(n_imagez=3), tmp_path / "job")
    record = json.loads((tmp_path / "job" / "error.json").read_text())
    assert record["type"] == "InputError" and "Traceback" in record["traceback"]


def test_result_file_without_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="options\\['path'\\]"):
        run_job(JobConfig(images=(), backend="result_file"), tmp_path / "job")


def test_missing_interpreter_is_a_worker_error(tmp_path):
    with pytest.raises(WorkerError, match="Cannot start the worker"):
        Job(_synthetic(), tmp_path / "job", python=str(tmp_path / "no-python")).start()


def test_parent_side_modules_do_not_load_torch():
    code = (
        "import sys, core.job, core.worker, core.synthetic, core.result_file, core.geometry.conventions;"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("conftest").REPO_ROOT))


def test_prune_keeps_the_newest_jobs_and_those_in_use(tmp_path):
    jobs = tmp_path / "jobs"
    names = [f"20261121-1000{k:02d}-abc{k:03d}" for k in range(6)]
    for k, name in enumerate(names):
        (jobs / name).mkdir(parents=True)
        (jobs / name / "job.json").write_text("{}")
        os.utime(jobs / name / "job.json", ns=(k * 10**9, k * 10**9))  # started k seconds apart
    run_job(_synthetic(n_images=1), jobs / names[1])
    os.utime(jobs / names[1] / "job.json", ns=(10**9, 10**9))
    (jobs / "notes").mkdir()  # not a job folder: never touched
    in_use = jobs / names[1] / "result"  # an open .blend still uses this result
    assert (in_use / "result.json").is_file()

    removed = prune_job_folders(jobs, keep=2, protect=[in_use])

    assert [p.name for p in removed] == [names[0], names[2], names[3]]
    assert sorted(p.name for p in jobs.iterdir()) == sorted([names[1], names[4], names[5], "notes"])
    assert SceneResult.load(in_use).images  # the protected result still loads
    assert prune_job_folders(jobs, keep=2, protect=[in_use]) == []

"""Workers that are cancelled, crash, are killed or run out of memory (real subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import JobConfig
from core.errors import Cancelled, InputError, OutOfMemoryError, WorkerError
from core.job import Job
from core.worker import error_record

REPO_ROOT = Path(__file__).resolve().parents[2]


def _synthetic(**options) -> JobConfig:
    return JobConfig(images=(), backend="synthetic", options={"size": 32, **options})


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _assert_gone(pid: int) -> None:
    # Reaped by Popen.wait, so even a zombie would be gone: kill(pid, 0) must fail.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    if Path("/proc").is_dir():
        assert _group_members(pid) == []


def _wait_for_stage(job: Job, stage: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job.poll()
        if status.stage == stage or status.state != "running":
            return status
        time.sleep(0.05)
    raise AssertionError(f"the worker never reached stage {stage!r}")


def test_cancel_mid_job_stops_the_worker_quickly(tmp_path):
    job = Job(_synthetic(n_images=30, sleep_per_step=0.5, child_process=True), tmp_path / "job")
    job.start()
    assert _wait_for_stage(job, "rendering").state == "running"
    assert len(_group_members(job.process.pid)) == 2  # the worker and its child
    t0 = time.monotonic()
    job.cancel(grace_s=2.0)
    assert time.monotonic() - t0 < 2.0
    _assert_gone(job.process.pid)
    assert job.process.returncode == 1  # it stopped by itself at its next progress report
    assert job.poll().state == "cancelled"
    assert not (tmp_path / "job" / "result").exists()
    with pytest.raises(Cancelled):
        job.result()


def test_cancel_kills_a_worker_that_does_not_notice(tmp_path):
    # A 60 s step never reaches the next cancel check: the grace period ends with SIGTERM.
    job = Job(_synthetic(n_images=3, sleep_per_step=60.0, child_process=True), tmp_path / "job")
    job.start()
    _wait_for_stage(job, "rendering")
    assert len(_group_members(job.process.pid)) == 2  # the worker and its child
    t0 = time.monotonic()
    job.cancel(grace_s=0.5)
    assert time.monotonic() - t0 < 2.5
    assert job.process.returncode == -signal.SIGTERM
    _assert_gone(job.process.pid)
    assert job.poll().state == "cancelled"
    assert not (tmp_path / "job" / "result").exists()


@pytest.mark.parametrize("ending", ["killed", "finished"])
def test_the_workers_temporary_files_never_outlive_the_job(tmp_path, ending):
    # A worker killed after the grace time cannot clean up (e.g. COLMAP's workspace): the parent
    # removes the worker's temporary folder however the worker ended.
    sleep = 60.0 if ending == "killed" else 0.0
    job = Job(_synthetic(n_images=2, sleep_per_step=sleep, temp_file=True), tmp_path / "job")
    job.start()
    scratch = tmp_path / "job" / "tmp"
    if ending == "killed":
        _wait_for_stage(job, "rendering")
        left = list(scratch.iterdir())
        assert [p.name[:10] for p in left] == ["synthetic-"]  # the worker's tempfile went here
        job.cancel(grace_s=0.2)
        assert job.process.returncode == -signal.SIGTERM
    else:
        assert len(job.wait().images) == 2
        assert "left temporary file " + str(scratch) in (tmp_path / "job" / "worker.log").read_text()
    assert not scratch.exists()


def test_python_exception_becomes_a_structured_worker_error(tmp_path):
    job = Job(_synthetic(crash="exception"), tmp_path / "job")
    with pytest.raises(WorkerError, match="unexpected error: RuntimeError: synthetic crash requested"):
        job.wait()
    assert job.poll().state == "failed"


@pytest.mark.parametrize(
    ("crash", "expected"),
    [("segfault", r"crashed \(SIGSEGV\)(.|\n)*Fatal Python error: Segmentation fault"),
     ("exit", r"exited with status 3 without a result(.|\n)*crashing as asked: exit")],
)
def test_crashing_worker_gives_a_worker_error_with_the_log_tail(tmp_path, crash, expected):
    job = Job(_synthetic(crash=crash), tmp_path / "job")
    with pytest.raises(WorkerError, match=expected):
        job.wait()
    assert job.poll().state == "failed"
    assert not (tmp_path / "job" / "result").exists()


def test_killed_worker_says_possibly_out_of_memory(tmp_path):
    job = Job(_synthetic(n_images=3, sleep_per_step=60.0), tmp_path / "job")
    job.start()
    _wait_for_stage(job, "rendering")
    os.kill(job.process.pid, signal.SIGKILL)  # what the kernel's OOM killer does
    with pytest.raises(WorkerError, match=r"killed \(SIGKILL\), possibly out of memory"):
        job.wait()
    _assert_gone(job.process.pid)


def test_memory_error_becomes_out_of_memory_error(tmp_path):
    job = Job(_synthetic(memory_limit_gb=2.0, allocate_gb=3.0), tmp_path / "job")
    with pytest.raises(OutOfMemoryError, match="Out of memory .*smaller resolution"):
        job.wait()


def test_torch_out_of_memory_errors_map_to_out_of_memory_error(tmp_path):
    torch = pytest.importorskip("torch")
    for exc in (
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    ):
        record = error_record(exc, tmp_path)
        assert record["type"] == "OutOfMemoryError"
        assert str(exc) in record["message"] and "smaller resolution" in record["message"]
    assert error_record(RuntimeError("shape mismatch"), tmp_path)["type"] == "WorkerError"
    assert error_record(InputError("bad"), tmp_path) == {**error_record(InputError("bad"), tmp_path), "type": "InputError", "message": "bad"}


def test_worker_respects_thread_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = Job(_synthetic(n_images=1), tmp_path / "job")
    job.wait()
    assert ", 1 thread(s)" in (tmp_path / "job" / "worker.log").read_text()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_worker_stops_when_its_parent_dies(tmp_path):
    parent = (
        "import os, sys, time\n"
        "from core.config import JobConfig\n"
        "from core.job import Job\n"
        "job = Job(JobConfig(images=(), backend='synthetic',"
        " options={'size': 16, 'n_images': 100, 'sleep_per_step': 0.2}), sys.argv[1])\n"
        "job.start()\n"
        "print(job.process.pid, flush=True)\n"
        "while job.poll().stage != 'rendering':\n"
        "    time.sleep(0.02)\n"
        "os._exit(0)  # dies like a crashed Blender: no cancel\n"
    )
    out = subprocess.run([sys.executable, "-c", parent, str(tmp_path / "job")], capture_output=True,
                         text=True, check=True, cwd=REPO_ROOT, timeout=60)
    worker_pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5.0
    while _group_members(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(worker_pid) == []
    assert json.loads((tmp_path / "job" / "error.json").read_text())["type"] == "Cancelled"


def test_interpreter_failing_at_start_up_shows_its_stderr(tmp_path):
    # A worker interpreter that cannot import what it needs (a wrong environment in the
    # preferences) dies before logging starts: the message quotes its stderr instead.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import recon_missing_module" "$@"\n')
    python.chmod(0o755)
    job = Job(_synthetic(), tmp_path / "job", python=str(python))
    with pytest.raises(WorkerError, match="exited with status 1 without a result(.|\n)*No module named 'recon_missing_module'"):
        job.wait()

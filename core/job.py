"""The parent side of a worker job: start, poll, cancel, collect (Blender, scripts; never torch).

A :class:`Job` writes ``job.json`` into its job folder and starts ``python -m core.worker JOB_DIR``
in a new session (its own process group, so a cancel takes any grandchildren too). The worker
speaks only through files (see :mod:`.worker` and ``core/FORMATS.md``); this class reads them:

* :meth:`Job.poll` parses new ``progress.jsonl`` lines and returns a :class:`JobStatus` with an ETA;
* :meth:`Job.cancel` creates the ``cancel`` file, gives the worker ``grace_s`` to stop on its own,
  then terminates and kills the process group;
* :meth:`Job.result` loads ``result/`` or raises the worker's error as its own
  :mod:`.errors` class; a worker that crashed, was killed or left no result gives
  :class:`~.errors.WorkerError` with the tail of ``worker.log``.

``Job.wait`` / :func:`run_job` are the synchronous path for headless use (no timers there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import JobConfig
from .errors import ERROR_TYPES, Cancelled, ReconstructionError, WorkerError
from .worker import CANCEL_FILE, ERROR_FILE, JOB_FILE, LOG_FILE, PROGRESS_FILE, RESULT_DIR

if TYPE_CHECKING:
    from .result import SceneResult

EXTENSION_ROOT = Path(__file__).resolve().parent.parent
"""The folder that contains the ``core`` package: the worker's ``PYTHONPATH`` entry."""

STDERR_FILE = "worker.stderr"
"""The worker's stdout and stderr (interpreter start-up failures land here, not in the log)."""

SCRATCH_DIR = "tmp"
"""The worker's temporary folder (its ``TMPDIR``), removed when the worker has ended. A worker
that is killed (cancel after the grace time, out of memory) cannot clean up its own temporary
files, e.g. the COLMAP workspace; the parent always can."""

_TAIL_CHARS = 2000
_ETA_MIN_FRACTION = 0.02
_ETA_MIN_SECONDS = 1.0
_GROUP_EXIT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job.

    Attributes:
        state: ``"running"`` | ``"done"`` | ``"failed"`` | ``"cancelled"``.
        stage: the worker's current stage (``"loading images"``, ``"pairs"``, ...).
        fraction: overall progress in [0, 1].
        message: the latest detail (``"pair 3/12"``).
        eta_s: estimated seconds left, or None while unknown.
    """

    state: str
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    eta_s: float | None = None


def _tail(path: Path, chars: int = _TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the worker's whole process group (POSIX) or the worker itself."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        else:
            proc.terminate()  # TerminateProcess: there is no gentler signal to send
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process of group ``pgid`` exists.

    Killed orphans stay zombies until init reaps them, which can take seconds in containers, and
    ``killpg(pgid, 0)`` counts zombies; so on Linux read the states from ``/proc`` instead.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # the process ended while we looked
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Wait until no live process of group ``pgid`` is left (a killed process takes a moment)."""
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


class Job:
    """One reconstruction run in a worker process.

    Args:
        config: the job.
        job_dir: the job's folder (created; protocol files of an earlier run are removed).
        python: interpreter for the worker; default: this one (Blender's own Python in Blender).
        extra_paths: more ``PYTHONPATH`` entries, e.g. the folder with the extension's wheels or
            the site-packages of an external environment with torch.
    """

    def __init__(
        self,
        config: JobConfig,
        job_dir: str | Path,
        python: str | None = None,
        extra_paths: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.job_dir = Path(job_dir).resolve()
        self.python = python or sys.executable
        self.extra_paths = [str(p) for p in extra_paths]
        self.process: subprocess.Popen | None = None
        self._stderr = None
        self._read_offset = 0
        self._status = JobStatus("running", "starting", 0.0, "starting the worker")
        self._start_time = 0.0
        self._cancel_requested = False

    # -- start -----------------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(EXTENSION_ROOT), *self.extra_paths]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        for name in ("TMPDIR", "TEMP", "TMP"):  # tempfile's choice on POSIX and on Windows
            env[name] = str(self.job_dir / SCRATCH_DIR)
        return env

    def start(self) -> None:
        """Write ``job.json`` and start the worker.

        Raises:
            WorkerError: the job was already started, or the interpreter cannot be started.
        """
        if self.process is not None:
            raise WorkerError("This job was already started; create a new Job to run it again.")
        self.job_dir.mkdir(parents=True, exist_ok=True)
        for name in (PROGRESS_FILE, ERROR_FILE, CANCEL_FILE, LOG_FILE, STDERR_FILE):
            (self.job_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.job_dir / RESULT_DIR, ignore_errors=True)
        (self.job_dir / SCRATCH_DIR).mkdir(exist_ok=True)
        self.config.save(self.job_dir / JOB_FILE)
        self._stderr = open(self.job_dir / STDERR_FILE, "wb")  # noqa: SIM115 (closed when done)
        posix = os.name == "posix"
        try:
            self.process = subprocess.Popen(
                [self.python, "-m", "core.worker", str(self.job_dir)],
                cwd=self.job_dir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=self._stderr,
                stderr=subprocess.STDOUT,
                start_new_session=posix,
                creationflags=0 if posix else subprocess.CREATE_NEW_PROCESS_GROUP,
            )
        except OSError as exc:
            self._ended()
            raise WorkerError(
                f"Cannot start the worker with {self.python}: {exc}. Check the worker Python "
                "interpreter in the extension preferences."
            ) from exc
        self._start_time = time.monotonic()

    # -- progress --------------------------------------------------------------------------
    def _read_progress(self) -> None:
        """Parse complete new lines of ``progress.jsonl`` into the current status."""
        try:
            with open(self.job_dir / PROGRESS_FILE, "rb") as f:
                f.seek(self._read_offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self._read_offset += end
        for raw in chunk[:end].splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            self._status = JobStatus(
                "running", str(line.get("stage", "")), float(line.get("fraction", 0.0)),
                str(line.get("message", "")), self._eta(float(line.get("fraction", 0.0))),
            )

    def _eta(self, fraction: float) -> float | None:
        """Linear extrapolation of the elapsed time; None until there is enough to go on."""
        elapsed = time.monotonic() - self._start_time
        if fraction < _ETA_MIN_FRACTION or elapsed < _ETA_MIN_SECONDS:
            return None
        return max(0.0, elapsed * (1.0 - fraction) / fraction)

    def _final_state(self) -> str:
        if (self.job_dir / RESULT_DIR / "result.json").is_file():
            return "done"
        if self._cancel_requested or self._error_type() == Cancelled.__name__:
            return "cancelled"
        return "failed"

    def poll(self) -> JobStatus:
        """The job's state now; parses new progress lines (cheap: call it from a UI timer)."""
        if self.process is None:
            return JobStatus("running", "", 0.0, "not started")
        self._read_progress()
        if self.process.poll() is None:
            return self._status
        self._ended()
        state = self._final_state()
        fraction = 1.0 if state == "done" else self._status.fraction
        return JobStatus(state, self._status.stage, fraction, self._status.message, 0.0)

    # -- cancel ----------------------------------------------------------------------------
    def cancel(self, grace_s: float = 2.0) -> None:
        """Ask the worker to stop; after ``grace_s`` terminate, then kill its process group.

        Returns when no process of the job is left. A worker that had already finished keeps
        its result.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self._cancel_requested = True
            (self.job_dir / CANCEL_FILE).touch()
            for sig, wait_s in ((None, grace_s), (signal.SIGTERM, 1.0), (getattr(signal, "SIGKILL", None), 5.0)):
                if sig is not None:
                    _kill_group(self.process, sig)
                try:
                    self.process.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if os.name == "posix":
                # Grandchildren the worker started may outlive it; the group id still reaches them.
                _kill_group(self.process, signal.SIGKILL)
                _wait_group_gone(self.process.pid, _GROUP_EXIT_TIMEOUT_S)
        self._ended()

    def _ended(self) -> None:
        """The worker is gone: close its output file and remove its temporary folder."""
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.close()
        shutil.rmtree(self.job_dir / SCRATCH_DIR, ignore_errors=True)

    # -- result ----------------------------------------------------------------------------
    def _error_type(self) -> str | None:
        try:
            return json.loads((self.job_dir / ERROR_FILE).read_text()).get("type")
        except (OSError, ValueError, AttributeError):
            return None

    def _crash_message(self) -> str:
        rc = self.process.returncode
        if rc is not None and rc < 0:
            sig = -rc
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            if sig == getattr(signal, "SIGKILL", -1):
                what = f"was killed ({name}), possibly out of memory (the system kills the largest process)"
            else:
                what = f"crashed ({name})"
        elif rc:
            what = f"exited with status {rc} without a result"
        else:
            what = "exited without a result"
        source = self.job_dir / LOG_FILE
        details = _tail(source)
        if not details:  # it died before its log started: the interpreter's own output says why
            source = self.job_dir / STDERR_FILE
            details = _tail(source)
        return (
            f"The reconstruction worker {what}. Try fewer photos or a smaller resolution if it "
            f"keeps happening. Last lines of {source}:\n{details or '(empty)'}"
        )

    def result(self) -> SceneResult:
        """The finished job's result.

        Raises:
            WorkerError: still running, crashed, killed, or exited without a result.
            Cancelled: the job was cancelled.
            ReconstructionError: the worker's own error, as its class (InputError, ...).
        """
        from .result import SceneResult

        status = self.poll()
        if status.state == "running":
            raise WorkerError("The job is still running; wait for it to finish first.")
        if status.state == "done":
            return SceneResult.load(self.job_dir / RESULT_DIR)
        if status.state == "cancelled":
            raise Cancelled("Cancelled by the user.")
        try:
            record = json.loads((self.job_dir / ERROR_FILE).read_text())
        except FileNotFoundError:
            raise WorkerError(self._crash_message()) from None
        except (OSError, ValueError) as exc:
            raise WorkerError(f"The worker's error report is unreadable ({exc}). {self._crash_message()}") from exc
        error_class = ERROR_TYPES.get(record.get("type"), ReconstructionError)
        raise error_class(record.get("message", "The worker failed without a message."))

    def wait(
        self, progress_cb: Callable[[JobStatus], None] | None = None, poll_interval: float = 0.2
    ) -> SceneResult:
        """Start the job if needed, block until it ends and return :meth:`result`.

        ``progress_cb(status)`` is called with every new :class:`JobStatus`. A KeyboardInterrupt
        cancels the worker before it propagates.
        """
        if self.process is None:
            self.start()
        last = None
        try:
            while True:
                status = self.poll()
                if progress_cb is not None and status != last:
                    progress_cb(status)
                    last = status
                if status.state != "running":
                    return self.result()
                time.sleep(poll_interval)
        except KeyboardInterrupt:
            self.cancel()
            raise


def remove_oldest(
    folders: Iterable[str | Path], marker: str, keep: int, protect: Iterable[str | Path] = ()
) -> list[Path]:
    """Delete all but the newest ``keep`` of ``folders``, which accumulate (each holds a job or a
    result: tens of MB for a few photos).

    Only folders holding the file ``marker`` count, so nothing else is touched; a folder's age is
    that of ``marker``, written once when the folder was made (names carry the time only to the
    second, if at all). A folder is kept when a path in ``protect`` (e.g. the result folder an
    open .blend still uses) is that folder or lies inside it.

    Returns:
        The folders removed, oldest first.
    """
    candidates = sorted(
        (Path(p) for p in folders if (Path(p) / marker).is_file()),
        key=lambda p: ((p / marker).stat().st_mtime_ns, p.name),
    )
    protected = [Path(p).resolve() for p in protect]
    removed = []
    for folder in candidates[: max(0, len(candidates) - keep)]:
        folder = folder.resolve()
        if any(p == folder or folder in p.parents for p in protected):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def prune_job_folders(jobs_dir: str | Path, keep: int, protect: Iterable[str | Path] = ()) -> list[Path]:
    """Delete all but the newest ``keep`` job folders (those with a ``job.json``) in ``jobs_dir``,
    except the ``protect``ed ones (:func:`remove_oldest`)."""
    return remove_oldest(Path(jobs_dir).glob("*"), JOB_FILE, keep, protect)


def run_job(
    config: JobConfig,
    job_dir: str | Path,
    progress_cb: Callable[[JobStatus], None] | None = None,
    python: str | None = None,
    extra_paths: Sequence[str] = (),
) -> SceneResult:
    """Run ``config`` in a worker and return its result (synchronous; headless scripts)."""
    job = Job(config, job_dir, python=python, extra_paths=extra_paths)
    job.start()
    return job.wait(progress_cb)

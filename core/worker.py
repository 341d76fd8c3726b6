"""The worker process: runs one job described by files in a job folder.

Started by :class:`.job.Job` as ``python -m core.worker JOB_DIR`` (``PYTHONPATH`` = the folder
that contains ``core``). It never imports ``bpy``; torch is imported only by the backend that
needs it. The protocol (all files in ``JOB_DIR``, documented in ``core/FORMATS.md``):

* in: ``job.json`` (:meth:`.config.JobConfig.save`), and ``cancel`` (created by the parent to ask
  for a stop; checked at every progress report, as is the parent's death);
* out: ``progress.jsonl`` (one JSON object per line: ``stage``, ``fraction``, ``message``, ``time``),
  ``worker.log`` (this process's log), then either ``result/`` (:meth:`.result.SceneResult.save`
  and the upright copies of EXIF-rotated and HEIC photos, renamed into place when complete) or
  ``error.json`` (``type``, ``message``, ``traceback``).

Exit status: 0 with a result, 1 with ``error.json``, 2 for a bad command line.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from .config import JobConfig
from .errors import InputError, OutOfMemoryError, ReconstructionError, WorkerError
from .progress import CancelToken, Progress

if TYPE_CHECKING:
    from .result import SceneResult

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.jsonl"
RESULT_DIR = "result"
ERROR_FILE = "error.json"
CANCEL_FILE = "cancel"
LOG_FILE = "worker.log"

BACKENDS_WITHOUT_PHOTOS = ("synthetic", "result_file")
"""Backends that may run with an empty image list."""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# Shares of the overall progress bar.
_VALIDATE_SHARE = (0.0, 0.05)
_BACKEND_SHARE = (0.05, 0.97)


def limit_threads() -> int:
    """Size the thread pools to the cores this process may use, unless the environment says.

    One pool size for OpenMP (torch), MKL and OpenBLAS, taken from the CPU affinity (containers
    and ``taskset`` restrict it), so libraries do not each start a thread per machine core. On
    more than 4 cores one is left for Blender's UI; on small machines that would cost too much.
    Must run before numpy/torch are imported: their pools read these variables once.
    Returns the thread count in effect.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = cores - 1 if cores > 4 else cores
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    return int(os.environ["OMP_NUM_THREADS"])


class ProgressWriter:
    """Appends progress reports to ``progress.jsonl``; fractions never go backwards."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._last = 0.0

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self._last = max(self._last, float(fraction))
        line = {"stage": stage, "fraction": self._last, "message": message, "time": time.time()}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class WorkerCancelToken(CancelToken):
    """The ``cancel`` file, plus the parent's death: a worker whose parent (Blender, a script)
    exits is adopted by another process, and stops at its next progress report instead of
    running on unseen."""

    def __init__(self, cancel_file: Path) -> None:
        super().__init__(cancel_file)
        self._parent_pid = os.getppid()

    @property
    def cancelled(self) -> bool:
        if os.getppid() != self._parent_pid:
            return True
        return super().cancelled


def _folder_names(paths: list[str]) -> str:
    return ", ".join(sorted({str(Path(p).parent) for p in paths})) or "(no folder)"


def validate_images(job: JobConfig, progress: Progress) -> tuple[JobConfig, list[str]]:
    """Check the photos before the backend runs.

    A single folder in ``job.images`` stands for its photos (sorted by name; other files are
    skipped). Unreadable, truncated and non-image files are dropped with a warning, and so are
    their entries in the per-photo option lists (``known_focals``, ...: one per input photo).

    Returns:
        ``(job, warnings)``: the job with only the usable photos, and one warning per skipped file.

    Raises:
        InputError: no usable photo, naming the folder(s) looked at; a per-photo option list
            without one entry per photo.
    """
    from .align.options import restrict_photo_lists
    from .images import list_image_files, load_images

    paths: str | list[str] = list(job.images)
    if len(job.images) == 1 and Path(job.images[0]).is_dir():
        paths = job.images[0]
    elif not job.images:
        if job.backend in BACKENDS_WITHOUT_PHOTOS:
            return job, []
        raise InputError("The job lists no photos; choose a folder with photos.")
    progress("loading images", 0.0, "checking the photos")
    try:
        # 224 px is the cheapest size the loader offers; this pass only proves the files decode.
        loaded, skipped = load_images(paths, size=224)
    except InputError as exc:
        where = paths if isinstance(paths, str) else _folder_names(paths)
        raise InputError(f"No readable photo in {where}. {exc}") from exc
    warnings = [f"Skipped {Path(s['file']).name}: {s['reason']}" for s in skipped]
    progress("loading images", 1.0, f"{len(loaded)} photo(s), {len(skipped)} skipped")
    photos = list_image_files(paths) if isinstance(paths, str) else paths
    usable = {im.file for im in loaded}
    options = restrict_photo_lists(job.options, len(photos),
                                   [k for k, f in enumerate(photos) if f in usable])
    return dataclasses.replace(job, images=tuple(im.file for im in loaded), options=options), \
        warnings


def run(job: JobConfig, progress: Progress) -> SceneResult:
    """Validate the photos and run the job's backend in this process (tests, headless scripts)."""
    from .backends import run_backend

    job, warnings = validate_images(job, progress.sub(*_VALIDATE_SHARE))
    result = run_backend(job, progress.sub(*_BACKEND_SHARE))
    result.warnings = warnings + list(result.warnings)
    return result


def _is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (CUDA/MPS), or torch's CPU allocator failure."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__module__.startswith("torch") and type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def error_record(exc: BaseException, job_dir: Path) -> dict[str, str]:
    """``error.json`` content for an exception: our own classes pass through by name."""
    tb = "".join(traceback.format_exception(exc))
    if isinstance(exc, ReconstructionError):
        kind, message = type(exc).__name__, str(exc)
    elif _is_out_of_memory(exc):
        kind = OutOfMemoryError.__name__
        message = (
            f"Out of memory ({type(exc).__name__}: {exc}). Use fewer photos, a smaller resolution "
            "or a sparser pair graph, or run on a device with more memory."
        )
    else:
        kind = WorkerError.__name__
        message = (
            f"The worker failed with an unexpected error: {type(exc).__name__}: {exc}. "
            f"Details are in {job_dir / LOG_FILE}."
        )
    return {"type": kind, "message": message, "traceback": tb}


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _setup_logging(job_dir: Path):
    """Log to ``worker.log``; faulthandler writes a crash's Python stack there too."""
    log_file = open(job_dir / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    faulthandler.enable(file=log_file)
    return log_file


def main(argv: list[str]) -> int:
    """Run the job in ``argv[0]`` (a job folder) and write its result or error there."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        sys.stderr.write("usage: python -m core.worker JOB_DIR\n")
        return 2
    job_dir = Path(argv[0]).resolve()
    threads = limit_threads()
    _setup_logging(job_dir)
    log.info("worker pid %d, python %s, %d thread(s)", os.getpid(), sys.executable, threads)
    writer = ProgressWriter(job_dir / PROGRESS_FILE)
    progress = Progress(writer, WorkerCancelToken(job_dir / CANCEL_FILE))
    try:
        progress("starting", 0.0, "worker started")
        job = JobConfig.load(job_dir / JOB_FILE)
        log.info("backend %s, %d image(s), options %s", job.backend, len(job.images), job.options)
        result = run(job, progress)
        progress("saving", _BACKEND_SHARE[1], "writing the result")
        partial = job_dir / (RESULT_DIR + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        from .images import write_upright_copies  # here: numpy only after limit_threads()

        write_upright_copies(result.images, partial)  # Blender ignores EXIF, cannot read HEIC
        result.save(partial)
        partial.replace(job_dir / RESULT_DIR)
        writer("done", 1.0, f"{len(result.images)} camera(s)")
        log.info("done")
        return 0
    except BaseException as exc:  # noqa: BLE001 (everything must reach the parent as error.json)
        record = error_record(exc, job_dir)
        log.error("%s: %s\n%s", record["type"], record["message"], record["traceback"])
        _write_json_atomic(job_dir / ERROR_FILE, record)
        if isinstance(exc, KeyboardInterrupt):
            raise
        return 1
    finally:
        writer.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What the worker's Python environment has, and installing PyTorch into the extension's folder.

Torch-free and Blender-free: everything about the worker environment is learnt by running that
interpreter in a subprocess with a tiny probe script, so Blender's own process never imports
torch and never changes its own packages (Blender's numpy stays as it is).

Three pieces:

* :func:`probe` -> :class:`EnvironmentReport`: Python version, platform, which of torch / numpy /
  scipy / pillow / pycolmap / pillow-heif import (with versions and where they come from), torch's CUDA/MPS.
* :func:`plan_torch_install` -> :class:`TorchInstallPlan`: the pip command for the right torch
  build (CPU, CUDA matching the NVIDIA driver, or the macOS one), installed with ``--target`` into
  a folder of the extension's user data, never into Blender's site-packages.
* :class:`PipRun`: runs pip in a child process whose whole output goes to a log file the user can
  open; :meth:`PipRun.poll` turns the log into progress without blocking, :meth:`PipRun.wait`
  is the synchronous form (headless), and a failure raises :class:`~.errors.DependencyError`
  naming the log. After installing torch, :func:`remove_shadowing_numpy` keeps Blender's numpy.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Cancelled, DependencyError
from .progress import Progress

log = logging.getLogger(__name__)

TORCH_VERSION = "2.13.0"
"""The torch release the worker is tested with; the install action installs exactly this."""

PYTORCH_INDEX = "https://download.pytorch.org/whl"

CUDA_BUILDS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("cu130", (13, 0)),
    ("cu128", (12, 8)),
    ("cu126", (12, 6)),
)
"""PyTorch CUDA builds (index tag, lowest CUDA version the driver must support), newest first."""

PROBE_MODULES: dict[str, str] = {
    "torch": "torch",
    "numpy": "numpy",
    "scipy": "scipy",
    "pillow": "PIL",
    "pycolmap": "pycolmap",
    "pillow-heif": "pillow_heif",
}
"""Distribution name -> import name of the packages the worker may need (pillow-heif: only for
HEIC/HEIF photos, which are skipped with a message without it)."""

BACKEND_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "dust3r": ("numpy", "pillow", "scipy", "torch"),
    "classical": ("numpy", "pillow", "scipy", "torch", "pycolmap"),
    "synthetic": ("numpy",),
    "result_file": ("numpy",),
}
"""Packages (distribution names) each backend imports in the worker."""

PROBE_TIMEOUT_S = 120.0

# Runs inside the probed interpreter: stdlib only, prints one JSON object on the last line.
_PROBE_SCRIPT = r"""
import importlib, importlib.metadata, json, platform, sys
modules = json.loads(sys.argv[1])
out = {"executable": sys.executable, "version": platform.python_version(),
       "platform": sys.platform, "machine": platform.machine(), "modules": {}, "pip": None}
try:
    out["pip"] = importlib.metadata.version("pip")
except importlib.metadata.PackageNotFoundError:
    pass
for dist, name in modules.items():
    entry = {"version": None, "location": "", "error": ""}
    try:
        mod = importlib.import_module(name)
    except Exception as exc:
        entry["error"] = type(exc).__name__ + ": " + str(exc)
        out["modules"][dist] = entry
        continue
    entry["location"] = str(getattr(mod, "__file__", "") or "")
    entry["version"] = str(getattr(mod, "__version__", "") or "")
    if not entry["version"]:
        try:
            entry["version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    out["modules"][dist] = entry
torch = sys.modules.get("torch")
if torch is not None:
    try:
        out["torch_cuda"] = torch.version.cuda
        out["cuda_available"] = bool(torch.cuda.is_available())
        out["cuda_device"] = torch.cuda.get_device_name(0) if out["cuda_available"] else ""
        mps = getattr(torch.backends, "mps", None)
        out["mps_available"] = bool(mps is not None and mps.is_available())
    except Exception as exc:  # a damaged torch must not hide the rest of the report
        out["torch_error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class ModuleStatus:
    """One probed package: ``version`` is None when it does not import (``error`` says why), and
    ``""`` when it imports but tells no version."""

    version: str | None
    location: str = ""
    error: str = ""


@dataclass(frozen=True)
class EnvironmentReport:
    """What one interpreter (plus extra ``PYTHONPATH`` folders) provides to the worker.

    Attributes:
        python: the interpreter that was probed (as given).
        python_version: e.g. ``"3.11.7"``.
        platform, machine: ``sys.platform`` and ``platform.machine()`` of that interpreter.
        modules: distribution name -> :class:`ModuleStatus`, for every probed package.
        pip_version: pip's version, None when pip is missing (then nothing can be installed).
        torch_cuda: the CUDA version torch was built for (None: CPU or macOS build, or no torch).
        cuda_available, cuda_device: whether torch sees an NVIDIA GPU, and its name.
        mps_available: whether torch sees Apple's Metal device.
        torch_error: why torch's devices could not be queried (a damaged install), else "".
    """

    python: str
    python_version: str
    platform: str
    machine: str
    modules: dict[str, ModuleStatus]
    pip_version: str | None = None
    torch_cuda: str | None = None
    cuda_available: bool = False
    cuda_device: str = ""
    mps_available: bool = False
    torch_error: str = ""

    def has(self, dist: str) -> bool:
        status = self.modules.get(dist)
        return status is not None and status.version is not None

    def missing_for(self, backend: str) -> list[str]:
        """Packages ``backend`` needs that do not import here (distribution names)."""
        return [d for d in BACKEND_REQUIREMENTS[backend] if not self.has(d)]

    @property
    def accelerator(self) -> str:
        """``"cuda"``, ``"mps"`` or ``"cpu"``: the best device torch can use here."""
        if self.cuda_available:
            return "cuda"
        return "mps" if self.mps_available else "cpu"

    def summary(self) -> list[str]:
        """Short human-readable lines for the preferences panel and logs."""
        lines = [f"Python {self.python_version} ({self.platform}, {self.machine}): {self.python}"]
        for dist, status in self.modules.items():
            lines.append(f"{dist} {status.version}" if status.version else f"{dist}: missing")
        if self.torch_error:
            lines.append(f"torch is damaged: {self.torch_error}")
        elif self.has("torch"):
            device = self.cuda_device or self.accelerator.upper()
            lines.append(f"torch device: {device}")
        return lines


def probe(
    python: str,
    extra_paths: Sequence[str] = (),
    modules: dict[str, str] | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> EnvironmentReport:
    """Run ``python`` with ``extra_paths`` first on ``PYTHONPATH`` and report what it provides.

    Args:
        python: path of the interpreter the worker would run (Blender's or a user environment's).
        extra_paths: folders the worker gets on ``PYTHONPATH`` (the extension's torch folder,
            Blender's extension wheels folder).
        modules: distribution name -> import name to check; default :data:`PROBE_MODULES`.

    Raises:
        DependencyError: the interpreter does not exist, does not run, or hangs.
    """
    modules = dict(PROBE_MODULES if modules is None else modules)
    if not Path(python).is_file():
        raise DependencyError(
            f"Python interpreter {python!r} does not exist; set the worker's Python in the "
            "extension preferences to the python executable of an environment (or clear it)."
        )
    cmd = [python, "-c", _PROBE_SCRIPT, json.dumps(modules)]
    try:
        proc = subprocess.run(
            cmd, env=worker_env(extra_paths), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        raise DependencyError(
            f"Python interpreter {python} did not answer within {timeout_s:.0f} s."
        ) from exc
    except OSError as exc:
        raise DependencyError(f"Cannot run Python interpreter {python}: {exc}") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise DependencyError(
            f"Python interpreter {python} failed the environment check "
            f"(exit code {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    data = json.loads(lines[-1])
    return EnvironmentReport(
        python=python,
        python_version=data["version"],
        platform=data["platform"],
        machine=data["machine"],
        modules={d: ModuleStatus(**m) for d, m in data["modules"].items()},
        pip_version=data["pip"],
        torch_cuda=data.get("torch_cuda"),
        cuda_available=data.get("cuda_available", False),
        cuda_device=data.get("cuda_device", ""),
        mps_available=data.get("mps_available", False),
        torch_error=data.get("torch_error", ""),
    )


def worker_env(extra_paths: Sequence[str] = ()) -> dict[str, str]:
    """The environment for a child interpreter: ``extra_paths`` put first on ``PYTHONPATH``."""
    env = dict(os.environ)
    paths = [str(p) for p in extra_paths]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


# ------------------------------------------------------------------------------------------------
# Choosing the torch build


@dataclass(frozen=True)
class TorchInstallPlan:
    """How to install torch into ``target``.

    Attributes:
        variant: ``"cpu"``, ``"cuda"`` (with ``index_tag`` e.g. ``"cu128"``) or ``"macos"``.
        pip_args: arguments after ``python -m pip``.
        target: folder the packages go into (then given to the worker on ``PYTHONPATH``).
        description: one sentence for the user: what is installed and why this build.
    """

    variant: str
    pip_args: tuple[str, ...]
    target: str
    description: str
    index_tag: str = ""


def detect_cuda_driver() -> tuple[int, int] | None:
    """The highest CUDA version the installed NVIDIA driver supports, or None without one.

    Read from ``nvidia-smi`` (ships with the driver on Linux and Windows).
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def plan_torch_install(
    target: str | os.PathLike,
    variant: str = "auto",
    system: str | None = None,
    machine: str | None = None,
    cuda_driver: tuple[int, int] | None = None,
    pip_version: str | None = None,
) -> TorchInstallPlan:
    """Choose the torch build for this computer and the pip command that installs it.

    Args:
        target: folder for the packages (the extension's user folder, never site-packages).
        variant: ``"auto"`` (CUDA when the driver supports a published CUDA build, else CPU;
            the macOS build on macOS), ``"cpu"`` or ``"cuda"``.
        system, machine: ``platform.system()``/``platform.machine()``; default this computer.
        cuda_driver: the driver's CUDA version (:func:`detect_cuda_driver`); used on Linux and
            Windows only.
        pip_version: the worker interpreter's pip (:attr:`EnvironmentReport.pip_version`); pip
            24.1+ prints download progress as lines we can read, older pips print none.

    Raises:
        DependencyError: no torch build exists for this platform (Intel Macs, 32-bit), or
            ``variant="cuda"`` without a driver new enough for any published CUDA build.
    """
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if variant not in ("auto", "cpu", "cuda"):
        raise DependencyError(f"Unknown torch variant {variant!r}; choose auto, cpu or cuda.")
    target = str(target)
    base = (
        "install", "--target", target, "--upgrade", "--no-input",
        "--progress-bar", "raw" if _version_tuple(pip_version) >= (24, 1) else "off",
        f"torch=={TORCH_VERSION}",
    )
    if system == "Darwin":
        if machine not in ("arm64", "aarch64"):
            raise DependencyError(
                "PyTorch publishes no current builds for Intel Macs. Point the worker's Python "
                "preference at an environment that already has torch."
            )
        return TorchInstallPlan(
            "macos", base, target,
            f"PyTorch {TORCH_VERSION} for macOS (Apple silicon, uses the GPU through Metal).",
        )
    if machine not in ("x86_64", "amd64", "aarch64", "arm64"):
        raise DependencyError(f"PyTorch publishes no builds for {system} on {machine}.")
    tag = ""
    if variant != "cpu" and cuda_driver is not None:
        tag = next((t for t, lowest in CUDA_BUILDS if cuda_driver >= lowest), "")
    if variant == "cuda" and not tag:
        found = "no NVIDIA driver" if cuda_driver is None else f"a driver for CUDA {cuda_driver}"
        lowest = ".".join(map(str, CUDA_BUILDS[-1][1]))
        raise DependencyError(
            f"The CUDA build of PyTorch needs an NVIDIA driver for CUDA {lowest} or newer; found "
            f"{found}. Update the driver, or install the CPU build."
        )
    if tag:
        return TorchInstallPlan(
            "cuda", (*base, "--index-url", f"{PYTORCH_INDEX}/{tag}"), target,
            f"PyTorch {TORCH_VERSION} with CUDA ({tag}) for the NVIDIA GPU.", tag,
        )
    why = "" if cuda_driver is None else " (the NVIDIA driver is too old for the CUDA builds)"
    return TorchInstallPlan(
        "cpu", (*base, "--index-url", f"{PYTORCH_INDEX}/cpu"), target,
        f"PyTorch {TORCH_VERSION} for the CPU{why}.",
    )


def _version_tuple(version: str | None) -> tuple[int, ...]:
    """``"24.1.2"`` -> ``(24, 1, 2)``; None or unparsable -> ``()`` (sorts before any version)."""
    match = re.match(r"\d+(\.\d+)*", version or "")
    return tuple(int(x) for x in match.group(0).split(".")) if match else ()


# ------------------------------------------------------------------------------------------------
# Running pip


@dataclass
class PipStatus:
    """``state``: running | done | failed | cancelled; ``fraction`` in [0, 1]; ``message``: the
    latest step pip reported (e.g. ``"Downloading torch-2.13.0-....whl (183.3 MB)"``)."""

    state: str
    fraction: float = 0.0
    message: str = ""


_DOWNLOAD_SHARE = 0.85  # share of the bar for downloads; unpacking/installing takes the rest


@dataclass
class PipRun:
    """``python -m pip <pip_args>`` in a child process; its output goes to ``log_path`` only.

    The child writes the log itself, so the parent (Blender) never blocks on a pipe; :meth:`poll`
    reads what was appended since the last call.
    """

    python: str
    pip_args: Sequence[str]
    log_path: Path
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _offset: int = field(default=0, init=False, repr=False)
    _status: PipStatus = field(default_factory=lambda: PipStatus("running"), init=False)
    _cancelled: bool = field(default=False, init=False)

    def start(self) -> None:
        """Start pip; raises :class:`DependencyError` when the interpreter cannot be run."""
        self.log_path = Path(self.log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [self.python, "-m", "pip", *self.pip_args]
        env = worker_env()
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "w", encoding="utf-8") as fh:
            fh.write("$ " + subprocess.list2cmdline(cmd) + "\n")
            fh.flush()
            self._offset = fh.tell()
            try:
                self._proc = subprocess.Popen(
                    cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            except OSError as exc:
                fh.write(f"Cannot start {self.python}: {exc}\n")
                raise DependencyError(
                    f"Cannot run {self.python} to install packages: {exc}. Log: {self.log_path}"
                ) from exc
        log.info("pip started: %s (log %s)", " ".join(cmd), self.log_path)

    def poll(self) -> PipStatus:
        """Read new log lines, update and return the status (never blocks)."""
        if self._proc is None or self._status.state != "running":
            return self._status
        rc = self._proc.poll()
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(self._offset)
            text = fh.read()
        # Keep a partial last line for the next call, unless pip has finished.
        complete = text if rc is not None else text[: text.rfind("\n") + 1]
        self._offset += len(complete.encode("utf-8", errors="replace"))
        for line in complete.splitlines():
            self._read_line(line.strip())
        if rc is not None:
            if self._cancelled:
                self._status = PipStatus("cancelled", self._status.fraction, "Cancelled")
            elif rc == 0:
                self._status = PipStatus("done", 1.0, "Installed")
            else:
                self._status = PipStatus("failed", self._status.fraction, f"pip exit code {rc}")
        return self._status

    def _read_line(self, line: str) -> None:
        status = self._status
        raw = re.fullmatch(r"Progress (\d+) of (\d+)", line)
        if raw:
            done, total = int(raw.group(1)), int(raw.group(2))
            if total > 0:
                status.fraction = max(status.fraction, _DOWNLOAD_SHARE * done / total)
        elif line.startswith(("Collecting ", "Downloading ", "Processing ", "Using cached ")):
            status.message = line
        elif line.startswith("Installing collected packages"):
            status.fraction = max(status.fraction, _DOWNLOAD_SHARE)
            status.message = "Installing packages (this can take a minute)"

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop pip; a half-installed target is left for the next install to replace."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._cancelled = True
        self._proc.terminate()
        try:
            self._proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def wait(self, progress: Progress | None = None, poll_interval: float = 0.2) -> None:
        """Block until pip ends, reporting to ``progress`` (whose cancel stops pip).

        Raises:
            DependencyError: pip failed; the message names the log and quotes its last lines.
            Cancelled: ``progress`` was cancelled.
        """
        if self._proc is None:
            self.start()
        while True:
            status = self.poll()
            if status.state != "running":
                break
            if progress is not None:
                try:
                    progress("install", status.fraction, status.message)
                except Cancelled:
                    self.cancel()
                    raise
            time.sleep(poll_interval)
        if status.state == "failed":
            raise DependencyError(self.failure_message())
        if status.state == "cancelled":
            raise Cancelled("Installation cancelled; nothing was changed in Blender.")
        if progress is not None:
            progress("install", 1.0, "Installed")

    def failure_message(self) -> str:
        """What failed, the last lines of pip's output and where the full log is."""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-3:]
        return (
            f"Installing packages failed: {' '.join(errors)[-400:]} "
            f"The full pip output is in {self.log_path}."
        )


def pip_missing_message(python: str) -> str:
    """What to do when :attr:`EnvironmentReport.pip_version` is None."""
    return (
        f"pip is not available in {python}, so nothing can be installed there. Run "
        f"'{python} -m ensurepip' once, or point the worker's Python preference at an "
        "environment that has torch."
    )


def remove_shadowing_numpy(target: str | os.PathLike) -> bool:
    """Delete a numpy that pip pulled into ``target``; returns whether one was removed.

    The worker puts ``target`` first on its path, so a numpy there would replace Blender's own
    (the one the extension's result files are written with). torch does not need a numpy of its
    own; keeping Blender's is the rule.
    """
    removed = False
    for path in Path(target).glob("numpy*"):
        if path.name in ("numpy", "numpy.libs") or path.name.startswith("numpy-"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed = True
    if removed:
        log.info("removed a numpy that pip installed into %s; Blender's numpy is used", target)
    return removed


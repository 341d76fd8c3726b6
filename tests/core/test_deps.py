"""core/deps: probing worker interpreters, choosing the torch build, running pip with a log.

The probe runs against real interpreters (this test environment, and a fresh virtual
environment without torch or pip); pip runs for real against local folders only (a wheel built
in ``tmp_path``, or a missing folder for the failure), so nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import venv
from pathlib import Path

import numpy
import pytest
import scipy

from core import deps
from core.errors import Cancelled, DependencyError
from core.progress import CancelToken, Progress
from dummy_wheel import DUMMY_NAME, DUMMY_VERSION, build_dummy_wheel


@pytest.fixture(scope="module")
def this_env() -> deps.EnvironmentReport:
    return deps.probe(sys.executable)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A fresh virtual environment with neither torch nor pip (``--without-pip`` is quick)."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=False).create(root)
    return str(root / "bin" / "python")


@pytest.fixture(scope="module")
def dummy_wheel_dir(tmp_path_factory) -> Path:
    return build_dummy_wheel(tmp_path_factory.mktemp("dummy-wheels")).parent


def test_probe_reports_this_environment(this_env):
    torch = pytest.importorskip("torch")
    assert this_env.python_version == platform.python_version()
    assert this_env.platform == sys.platform and this_env.machine == platform.machine()
    assert this_env.modules["torch"].version == torch.__version__
    assert this_env.modules["numpy"].version == numpy.__version__
    assert this_env.modules["scipy"].version == scipy.__version__
    assert this_env.modules["pillow"].version == importlib.metadata.version("pillow")
    assert this_env.modules["pycolmap"].version is not None
    assert Path(this_env.modules["torch"].location).parent == Path(torch.__file__).parent
    assert this_env.pip_version == importlib.metadata.version("pip")
    assert this_env.torch_cuda == torch.version.cuda
    assert this_env.cuda_available == torch.cuda.is_available()
    assert this_env.accelerator == ("cuda" if torch.cuda.is_available() else
                                    "mps" if this_env.mps_available else "cpu")
    assert this_env.missing_for("dust3r") == [] and this_env.missing_for("classical") == []


def test_probe_of_bare_environment_names_what_is_missing(bare_python):
    report = deps.probe(bare_python)
    assert report.python_version == platform.python_version()
    assert report.pip_version is None
    assert not report.has("torch") and not report.cuda_available
    assert report.modules["torch"].error.startswith("ModuleNotFoundError")
    assert report.missing_for("classical") == ["numpy", "pillow", "scipy", "torch", "pycolmap"]
    assert "torch: missing" in report.summary()


def test_probe_sees_extra_paths_first(bare_python, dummy_wheel_dir, tmp_path):
    target = tmp_path / "site"
    run = deps.PipRun(sys.executable, ["install", "--target", str(target), "--no-index",
                                       "--find-links", str(dummy_wheel_dir), DUMMY_NAME],
                      tmp_path / "install.log")
    run.wait()
    modules = {DUMMY_NAME: DUMMY_NAME}
    assert not deps.probe(bare_python, modules=modules).has(DUMMY_NAME)
    report = deps.probe(bare_python, extra_paths=[str(target)], modules=modules)
    assert report.modules[DUMMY_NAME].version == DUMMY_VERSION
    assert Path(report.modules[DUMMY_NAME].location).is_relative_to(target)


def test_probe_refuses_missing_or_broken_interpreter(tmp_path):
    with pytest.raises(DependencyError, match="does not exist"):
        deps.probe(str(tmp_path / "nope" / "python"))
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'not a python' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(DependencyError, match="exit code 3.*not a python"):
        deps.probe(str(broken))


def test_pip_install_reports_progress_and_logs(dummy_wheel_dir, tmp_path):
    target, log_path = tmp_path / "site", tmp_path / "logs" / "pip.log"
    seen = []
    run = deps.PipRun(sys.executable, ["install", "--target", str(target), "--no-index",
                                       "--find-links", str(dummy_wheel_dir), DUMMY_NAME], log_path)
    run.wait(Progress(lambda stage, f, msg: seen.append((stage, f, msg))), poll_interval=0.01)
    assert run.poll().state == "done"
    assert (target / DUMMY_NAME / "__init__.py").is_file()
    text = log_path.read_text()
    assert text.startswith("$ ") and f"Successfully installed {DUMMY_NAME}-{DUMMY_VERSION}" in text
    fractions = [f for _, f, _ in seen]
    assert fractions == sorted(fractions) and seen[-1] == ("install", 1.0, "Installed")


def test_pip_progress_is_read_from_pips_raw_lines(tmp_path):
    """Local installs print no download progress, so a stand-in prints what pip 24.1+ prints
    with ``--progress-bar raw`` for a download (as captured from a real run), line by line."""
    lines = ["Collecting torch==2.13.0",
             "  Downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (183.3 MB)",
             "Progress 0 of 1000", "Progress 500 of 1000", "Progress 1000 of 1000",
             "Installing collected packages: torch", "Successfully installed torch-2.13.0"]
    pip = tmp_path / "python"
    pip.write_text("#!/bin/sh\n" + "".join(f"echo '{ln}'\nsleep 0.5\n" for ln in lines))
    pip.chmod(0o755)
    seen = []
    run = deps.PipRun(str(pip), ["install", "torch"], tmp_path / "pip.log")
    run.wait(Progress(lambda stage, f, msg: seen.append((round(f, 4), msg))), poll_interval=0.05)
    assert (0.0, "Downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (183.3 MB)") in seen
    assert any(f == round(0.85 * 500 / 1000, 4) for f, _ in seen)  # half of the download share
    assert (0.85, "Installing packages (this can take a minute)") in seen
    assert seen[-1] == (1.0, "Installed")
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_pip_failure_is_logged_and_named(tmp_path):
    """A failed install raises DependencyError naming the log; the log holds pip's own output."""
    target, log_path = tmp_path / "site", tmp_path / "pip.log"
    run = deps.PipRun(sys.executable, ["install", "--target", str(target), "--no-index",
                                       "--find-links", str(tmp_path / "no-such-index"),
                                       "recon-no-such-package==1.0"], log_path)
    with pytest.raises(DependencyError) as info:
        run.wait()
    message = str(info.value)
    assert str(log_path) in message and "recon-no-such-package" in message
    assert "No matching distribution found" in log_path.read_text()
    assert run.poll().state == "failed"
    assert not (target / "recon_no_such_package").exists()


def test_pip_cancel_stops_the_child(dummy_wheel_dir, tmp_path):
    token = CancelToken()
    token.cancel()
    run = deps.PipRun(sys.executable, ["install", "--target", str(tmp_path / "site"), "--no-index",
                                       "--find-links", str(dummy_wheel_dir), DUMMY_NAME],
                      tmp_path / "pip.log")
    with pytest.raises(Cancelled):
        run.wait(Progress(cancel=token))
    assert run._proc.poll() is not None  # no pip left running
    assert run.poll().state == "cancelled"


def test_torch_install_without_pip_is_a_clear_error(bare_python, tmp_path):
    plan = deps.plan_torch_install(tmp_path / "torch", system="Linux", machine="x86_64")
    run = deps.PipRun(bare_python, plan.pip_args, tmp_path / "torch.log")
    with pytest.raises(DependencyError, match=r"No module named pip.*torch\.log"):
        run.wait()
    assert "No module named pip" in (tmp_path / "torch.log").read_text()
    assert "ensurepip" in deps.pip_missing_message(bare_python)


def test_cuda_driver_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    """A stand-in ``nvidia-smi`` on PATH prints the header the real one prints."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert deps.detect_cuda_driver() is None  # no driver tool
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '| NVIDIA-SMI 570.86   Driver Version: 570.86   "
                   "CUDA Version: 12.8     |'\n")
    smi.chmod(0o755)
    assert deps.detect_cuda_driver() == (12, 8)


@pytest.mark.parametrize(
    "system, machine, driver, variant, expect_variant, expect_index",
    [
        ("Linux", "x86_64", None, "auto", "cpu", "/cpu"),
        ("Linux", "x86_64", (12, 8), "auto", "cuda", "/cu128"),
        ("Linux", "x86_64", (13, 1), "auto", "cuda", "/cu130"),
        ("Linux", "x86_64", (12, 7), "auto", "cuda", "/cu126"),
        ("Linux", "x86_64", (12, 2), "auto", "cpu", "/cpu"),
        ("Linux", "x86_64", (12, 8), "cpu", "cpu", "/cpu"),
        ("Windows", "AMD64", (12, 6), "cuda", "cuda", "/cu126"),
        ("Darwin", "arm64", None, "auto", "macos", None),
    ],
)
def test_torch_plan_picks_the_build(system, machine, driver, variant, expect_variant, expect_index,
                                    tmp_path):
    plan = deps.plan_torch_install(tmp_path, variant, system, machine, driver, pip_version="26.0")
    assert plan.variant == expect_variant
    args = list(plan.pip_args)
    assert args[:3] == ["install", "--target", str(tmp_path)]
    assert f"torch=={deps.TORCH_VERSION}" in args
    assert "numpy" not in " ".join(args)
    if expect_index is None:
        assert "--index-url" not in args
    else:
        assert args[args.index("--index-url") + 1] == deps.PYTORCH_INDEX + expect_index
    assert args[args.index("--progress-bar") + 1] == "raw"


@pytest.mark.parametrize(
    "system, machine, driver, variant, match",
    [
        ("Darwin", "x86_64", None, "auto", "Intel Macs"),
        ("Linux", "x86_64", None, "cuda", "no NVIDIA driver"),
        ("Linux", "x86_64", (11, 8), "cuda", r"CUDA \(11, 8\)"),
        ("Linux", "i686", None, "auto", "no builds"),
        ("Linux", "x86_64", None, "rocm", "Unknown torch variant"),
    ],
)
def test_torch_plan_refuses_impossible_builds(system, machine, driver, variant, match, tmp_path):
    with pytest.raises(DependencyError, match=match):
        deps.plan_torch_install(tmp_path, variant, system, machine, driver)


def test_old_pip_gets_no_raw_progress(tmp_path):
    """pip < 24.1 rejects ``--progress-bar raw``; it gets ``off`` instead."""
    args = list(deps.plan_torch_install(tmp_path, system="Linux", machine="x86_64",
                                        pip_version="23.2.1").pip_args)
    assert args[args.index("--progress-bar") + 1] == "off"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--help"],
                         capture_output=True, text=True).stdout
    assert "raw" in out  # this environment's pip (>= 24.1) knows the mode the plan uses


def test_numpy_pulled_into_target_is_removed(tmp_path):
    for name in ("numpy", "numpy.libs", "numpy-1.26.4.dist-info", "numpyro", "sympy"):
        (tmp_path / name).mkdir()
    assert deps.remove_shadowing_numpy(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["numpyro", "sympy"]
    assert not deps.remove_shadowing_numpy(tmp_path)


@pytest.mark.parametrize("module", ["core.deps", "core.checkpoints"])
def test_blender_side_packaging_modules_are_torch_free(module):
    """Blender's process imports these, so they must not load torch (they ask the worker's
    Python in a child process instead)."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True)

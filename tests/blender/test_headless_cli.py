"""operators/cli.py end to end in a subprocess (the bpy module as Blender; synthetic backend).

Each run is wrapped in a timeout: bpy 4.5 can hang at exit, which the CLI avoids with os._exit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT

bpy = pytest.importorskip("bpy")

CLI = REPO_ROOT / "operators" / "cli.py"
SAMPLE_PHOTOS = REPO_ROOT / "tests" / "data" / "sample_scene" / "images"


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True,
                          text=True, timeout=180, cwd=cwd)


def _synthetic_truth(photos: Path, path: Path) -> None:
    """gt.json (shared/scenes format) of the synthetic scene's true cameras, in another world
    frame and scale (a similarity), computed by the synthetic backend in this process."""
    from core import synthetic
    from core.config import JobConfig
    from core.progress import Progress

    images = sorted(str(p) for p in photos.glob("*.png"))
    truth = synthetic.run(JobConfig(images=images, backend="synthetic"), Progress())
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    frames = []
    for im in truth.images:
        K = im.K_photo
        R_w2c = (rotation @ im.cam2world[:3, :3]).T
        centre = 3.0 * rotation @ im.cam2world[:3, 3] + [1.0, 2.0, 3.0]
        frames.append({"file": f"images/{Path(im.file).name}", "width": im.photo_size[0],
                       "height": im.photo_size[1], "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2],
                       "cy": K[1, 2], "R_w2c": R_w2c.tolist(), "t_w2c": (-R_w2c @ centre).tolist()})
    path.write_text(json.dumps({"frames": frames}))


def test_cli_writes_blend_preview_and_camera_errors(recon_photos, tmp_path):
    _synthetic_truth(recon_photos, tmp_path / "gt.json")
    out, preview = tmp_path / "out" / "scene.blend", tmp_path / "out" / "preview.png"
    run = _cli("--images", recon_photos, "--out", out, "--backend", "synthetic", "--output", "both",
               "--preview", preview, "--truth", tmp_path / "gt.json", "--cache-dir",
               tmp_path / "cache", cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

    with bpy.data.libraries.load(str(out)) as (data_from, _data_to):
        objects, collections = list(data_from.objects), list(data_from.collections)
    assert collections == ["Recon photos"]
    assert {"img0", "img1", "img2", "Recon photos points", "Recon photos mesh"} <= set(objects)
    assert not {"Cube", "Light", "Camera"} & set(objects)  # the startup scene was cleared

    from PIL import Image

    pixels = np.asarray(Image.open(preview).convert("RGB"), float)
    assert pixels.shape == (48, 64, 3)  # the first photo's size (64x48 < --preview-size)
    assert pixels.std() > 5.0  # an image of the scene, not a blank frame

    rotation = re.search(r"relative rotation error: median (\S+) deg, max (\S+) deg", run.stdout)
    translation = re.search(r"translation direction error: median \S+ deg, max (\S+) deg", run.stdout)
    assert "cameras compared: 3 (missing from the result: 0)" in run.stdout
    assert float(rotation.group(2)) < 1e-3 and float(translation.group(1)) < 1e-3


def test_cli_fails_clearly_on_an_empty_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    out = tmp_path / "scene.blend"
    run = _cli("--images", tmp_path / "photos", "--out", out, "--backend", "synthetic",
               "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert run.returncode == 1
    assert "photo_recon: error: No images" in run.stderr
    assert not out.exists()


def test_cli_refuses_bad_arguments(tmp_path):
    run = _cli("--out", tmp_path / "scene.blend", cwd=tmp_path)
    assert run.returncode == 2 and "--images" in run.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_interrupted_exits_130_and_stops_its_worker(recon_photos, tmp_path, sig):
    process = subprocess.Popen(
        [sys.executable, str(CLI), "--images", str(recon_photos), "--out", str(tmp_path / "s.blend"),
         "--backend", "synthetic", "--options", '{"sleep_per_step": 30}', "--cache-dir",
         str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        for line in process.stdout:  # wait until the worker is rendering
            if line.startswith("rendering"):
                break
        (log,) = (tmp_path / "cache" / "jobs").glob("*/worker.log")
        worker_pid = int(re.search(r"worker pid (\d+)", log.read_text()).group(1))
        process.send_signal(sig)
        _stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["photo_recon: error: Interrupted; the worker was stopped"]
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)  # the worker is gone too
    assert not (tmp_path / "s.blend").exists()


def test_cli_dust3r_without_weights_fails_before_any_job(recon_photos, tmp_path):
    # Explicitly asked for, DUSt3R never falls back to the classical backend (the panel does).
    run = _cli("--images", recon_photos, "--out", tmp_path / "s.blend", "--backend", "dust3r",
               "--weights-dir", tmp_path / "no_weights", "--cache-dir", tmp_path / "cache",
               cwd=tmp_path)
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"photo_recon: error: No DUSt3R weights found in {tmp_path / 'no_weights'}")
    for name in ("DUSt3R_ViTLarge_BaseDecoder_512_dpt", "DUSt3R_ViTLarge_BaseDecoder_512_linear"):
        assert f"{name}.pth or {name}/model.safetensors" in line
    assert "224_linear" not in line  # only the chosen resolution's names
    assert "--weights-dir" in line and '--options \'{"weights": "/path/to/file.pth"}\'' in line
    assert "classical" not in run.stdout + run.stderr
    assert not (tmp_path / "cache" / "jobs").exists() and not (tmp_path / "s.blend").exists()


def test_cli_honours_the_weights_option(recon_photos, tmp_path):
    """A truncated checkpoint given as the weights option: the loader's own error, no fallback."""
    pytest.importorskip("torch")  # the worker's loader needs it
    weights = tmp_path / "weights" / "cut.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"PK\x03\x04" + bytes(100))  # a zip header, as a .pth starts, then nothing
    run = _cli("--images", recon_photos, "--out", tmp_path / "s.blend", "--backend", "dust3r",
               "--options", json.dumps({"weights": "weights/cut.pth"}),  # relative to the cwd
               "--weights-dir", tmp_path / "no_weights", "--cache-dir", tmp_path / "cache",
               cwd=tmp_path)
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"photo_recon: error: {weights} ") and "truncated" in line, line
    (job_file,) = (tmp_path / "cache" / "jobs").glob("*/job.json")
    assert json.loads(job_file.read_text())["backend"] == "dust3r"
    assert not (tmp_path / "s.blend").exists()


def test_cli_refuses_a_missing_weights_file_before_the_job(recon_photos, tmp_path):
    missing = _cli("--images", recon_photos, "--out", tmp_path / "s.blend", "--backend", "dust3r",
                   "--options", json.dumps({"weights": str(tmp_path / "none.pth")}),
                   "--cache-dir", tmp_path / "cache2", cwd=tmp_path)
    assert missing.returncode == 1
    assert f"The DUSt3R weights file {tmp_path / 'none.pth'} does not exist" in missing.stderr
    assert not (tmp_path / "cache2" / "jobs").exists()


def test_cli_refuses_unwritable_outputs_before_the_job(recon_photos, tmp_path):
    """Each bad output path: exit 1 with one line naming it, no traceback, no job folder."""
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("")
    cases = [
        (["--out", "/proc/x/scene.blend"], "--out /proc/x/scene.blend cannot be written"),
        (["--out", "/proc/scene.blend"], "--out /proc/scene.blend cannot be written"),
        (["--out", tmp_path / "a_folder"], f"--out {tmp_path / 'a_folder'} is a folder"),
        (["--out", tmp_path / "a_file" / "s.blend"], f"--out {tmp_path / 'a_file' / 's.blend'} "
                                                       "cannot be written"),
        (["--out", tmp_path / "s.blend", "--preview", "/proc/p.png"],
         "--preview /proc/p.png cannot be written"),
        (["--out", tmp_path / "s.blend", "--cache-dir", "/proc/cache"],
         "Cannot create the job folder /proc/cache/jobs/"),
    ]
    for args, message in cases:
        cache = [] if "--cache-dir" in args else ["--cache-dir", tmp_path / "cache"]
        run = _cli("--images", recon_photos, "--backend", "synthetic", *args, *cache, cwd=tmp_path)
        assert run.returncode == 1, (args, run.stderr)
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith(f"photo_recon: error: {message}"), line
        assert "Traceback" not in run.stdout
        assert not (tmp_path / "cache").exists() and not (tmp_path / "s.blend").exists()


def test_cli_bad_options_json_is_an_argument_error(tmp_path):
    for text, reason in (("{bad", "not valid JSON"), ("[1, 2]", "must be a JSON object")):
        run = _cli("--images", tmp_path, "--out", tmp_path / "s.blend", "--options", text,
                   cwd=tmp_path)
        assert run.returncode == 2 and f"argument --options: {reason}" in run.stderr
    # Counts Blender would clamp silently (--window 0 ran with window 1).
    for option, text in (("--window", "0"), ("--keep-jobs", "-3"), ("--preview-size", "x")):
        run = _cli("--images", tmp_path, "--out", tmp_path / "s.blend", option, text, cwd=tmp_path)
        assert run.returncode == 2 and f"argument {option}:" in run.stderr, run.stderr


def test_cli_names_the_python_flag_for_a_bad_interpreter(recon_photos, tmp_path):
    run = _cli("--images", recon_photos, "--out", tmp_path / "s.blend", "--backend", "synthetic",
               "--python", tmp_path / "no" / "python", "--cache-dir", tmp_path / "cache",
               cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"photo_recon: error: The worker Python {tmp_path / 'no' / 'python'} is not an executable "
        "file; give a Python interpreter with --python (or fix the extension's Worker Python "
        "preference).")
    assert not (tmp_path / "cache").exists()


def test_cli_help_gives_every_option_a_default_and_hides_test_backends(tmp_path):
    run = _cli("--help", cwd=tmp_path)
    assert run.returncode == 0
    options = re.split(r"\n  (?=-)", run.stdout.split("options:", 1)[1])[1:]
    assert len(options) == 20  # --help and the 19 options
    for text in options:
        if not text.startswith(("-h", "--images", "--out ")):  # no default: required or --help
            assert "default" in text, text
    assert "synthetic" not in run.stdout and "result_file" not in run.stdout
    assert "(default: 320)" in " ".join(run.stdout.split())  # --preview-size's default


def test_cli_keeps_as_many_job_folders_as_asked(recon_photos, tmp_path):
    jobs = tmp_path / "cache" / "jobs"
    for run_index in range(3):
        run = _cli("--images", recon_photos, "--out", tmp_path / "s.blend", "--backend", "synthetic",
                   "--cache-dir", tmp_path / "cache", "--keep-jobs", "2", cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert len(list(jobs.iterdir())) == min(run_index + 1, 2)


@pytest.fixture
def three_sample_photos(tmp_path: Path) -> Path:
    """The bundled sample scene's first three photos (enough for the classical backend)."""
    import shutil

    folder = tmp_path / "sample3"
    folder.mkdir()
    for k in range(3):
        shutil.copy(SAMPLE_PHOTOS / f"view_{k:02d}.jpg", folder)
    return folder


def test_cli_prints_the_device_warning(three_sample_photos, tmp_path):
    """--device cuda without CUDA: the classical backend runs on the CPU and says so."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pycolmap")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: there is nothing to warn about")
    run = _cli("--images", three_sample_photos, "--out", tmp_path / "s.blend", "--device", "cuda",
               "--resolution", "224", "--preset", "speed", "--cache-dir", tmp_path / "cache",
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "warning: CUDA was requested but the worker's PyTorch cannot use it" in run.stdout


def test_cli_reconstructs_heic_photos_with_backgrounds_blender_can_show(three_sample_photos, tmp_path):
    """iPhone HEIC photos: the worker decodes them (pillow-heif), Blender shows JPEG copies."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pytest.importorskip("torch")
    pytest.importorskip("pycolmap")
    from PIL import Image

    heic = tmp_path / "heic"
    heic.mkdir()
    for jpg in sorted(three_sample_photos.glob("*.jpg")):
        with Image.open(jpg) as img:
            pillow_heif.from_pillow(img.convert("RGB")).save(heic / f"{jpg.stem}.HEIC", quality=95)
            size = img.size
    out = tmp_path / "heic.blend"
    run = _cli("--images", heic, "--out", out, "--resolution", "224", "--preset", "speed",
               "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    listing = subprocess.run(
        [sys.executable, "-c", "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
         "[print(bg.image.filepath, *bg.image.size) for c in bpy.data.cameras "
         "for bg in c.background_images]", str(out)],
        capture_output=True, text=True, timeout=120)
    rows = [line.split() for line in listing.stdout.splitlines() if line.endswith(f"{size[0]} {size[1]}")]
    assert len(rows) == 3, listing.stdout + listing.stderr
    assert all(path.endswith(".jpg") and "/upright/" in path for path, *_ in rows)


def test_the_panel_lists_the_photo_formats_only_the_worker_reads():
    import importlib

    from conftest import load_addon
    from core.images import HEIF_EXTENSIONS

    load_addon()
    properties = importlib.import_module("photo_recon.ui.properties")
    assert properties.PHOTOS_ONLY_THE_WORKER_READS == HEIF_EXTENSIONS

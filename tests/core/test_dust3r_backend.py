"""The dust3r backend end to end with a tiny random-weight checkpoint (no download)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import JobConfig
from core.dust3r.backend import cache_key, run, split_options
from core.dust3r.config import ModelConfig
from core.dust3r.model import Dust3rNet
from core.errors import InputError
from core.progress import Progress
from core.result import SceneResult

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ModelConfig(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=24, dec_depth=1,
                   dec_num_heads=2, head_type="linear", img_size=(224, 224))
CONSTRUCTOR = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(224, 224), "
               "head_type='linear', output_mode='pts3d', depth_mode=('exp', -inf, inf), "
               "conf_mode=('exp', 1, inf), enc_embed_dim=32, enc_depth=1, enc_num_heads=2, "
               "dec_embed_dim=24, dec_depth=1, dec_num_heads=2)")


@pytest.fixture()
def photos(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for k in range(3):
        path = tmp_path / f"photo{k}.png"
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), np.uint8)).save(path)
        files.append(str(path))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    return files + [str(tmp_path / "broken.jpg")]


@pytest.fixture()
def weights(tmp_path):
    torch.manual_seed(0)
    model = Dust3rNet(TINY)
    path = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=CONSTRUCTOR)}, path)
    return str(path)


def test_backend_runs_network_caches_and_aligns(photos, weights, tmp_path):
    job = JobConfig(images=tuple(photos), backend="dust3r", cache_dir=str(tmp_path / "cache"),
                    options={"weights": weights, "image_size": 224, "precision": "fp32",
                             "iterations": 5, "known_focals": [None, 200.0, None, None]})
    stages = []
    result = run(job, Progress(lambda stage, f, m: stages.append(stage)))
    assert "inference" in stages and "align" in stages
    assert [im.file for im in result.images] == photos[:3]
    assert result.unregistered[0]["file"] == photos[3]
    assert any("broken.jpg" in w for w in result.warnings)
    # The known focal is given in photo pixels (80x60 photo -> 224x224 network crop).
    assert result.images[1].K_photo[0, 0] == pytest.approx(200.0, rel=1e-9)
    for im in result.images:
        assert im.pts3d_world.shape == (224, 224, 3) and np.isfinite(im.cam2world).all()
    (cached,) = (tmp_path / "cache").glob("pairs-*.npz")
    # A second run with other alignment options reads the cache: no network.
    stages.clear()
    again = run(JobConfig(**{**job.__dict__, "options": {**job.options, "iterations": 0}}),
                Progress(lambda stage, f, m: stages.append(stage)))
    assert "inference" not in stages
    assert len(again.images) == 3
    result.save(tmp_path / "out")
    assert len(SceneResult.load(tmp_path / "out").images) == 3


def test_cache_key_changes_with_inputs(photos, weights):
    network, _ = split_options({"weights": weights})
    base = cache_key(photos[:3], network)
    assert base != cache_key(photos[:2], network)
    other, _ = split_options({"weights": weights, "graph": "swin-1"})
    assert base != cache_key(photos[:3], other)
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(photos[0])
    assert base != cache_key(photos[:3], network)


def test_bad_options_are_refused(weights):
    with pytest.raises(InputError, match="weights"):
        split_options({})
    with pytest.raises(InputError, match="iteratons"):
        split_options({"weights": weights, "iteratons": 3})


def test_per_photo_lists_are_checked_before_the_network(photos, weights, tmp_path):
    # Called directly (not through the worker), a list too long for the photos is refused at
    # once, before minutes of inference.
    job = JobConfig(images=tuple(photos[:3]), backend="dust3r", cache_dir=str(tmp_path / "c"),
                    options={"weights": weights, "image_size": 224,
                             "known_focals": [None, 200.0, None, None]})
    stages = []
    with pytest.raises(InputError, match="known_focals has 4 entries for 3 photos"):
        run(job, Progress(lambda stage, f, m: stages.append(stage)))
    assert "inference" not in stages


def test_exif_focal_becomes_a_known_focal(tmp_path, weights):
    rng = np.random.default_rng(1)
    files = []
    for k in range(3):
        exif = Image.Exif()
        if k != 1:  # the middle photo has no EXIF focal and keeps an estimated one
            exif.get_ifd(0x8769)[41989] = 26 + 4 * k  # FocalLengthIn35mmFilm, mm
        path = tmp_path / f"exif{k}.jpg"
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), np.uint8)).save(path, exif=exif)
        files.append(str(path))
    job = JobConfig(images=tuple(files), backend="dust3r", options={
        "weights": weights, "image_size": 224, "precision": "fp32", "iterations": 3,
        "exif_focal": True})
    result = run(job, Progress())
    for k in (0, 2):
        # 35 mm-equivalent focal on the 43.27 mm full-frame diagonal -> the 100 px photo diagonal
        expected = (26 + 4 * k) / np.hypot(36, 24) * np.hypot(80, 60)
        assert result.images[k].K_photo[0, 0] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_missing_device_runs_on_the_cpu_with_a_warning(photos, weights, device):
    """The CLI prints result warnings and the panel shows them: a device asked for but missing
    must be among them, not only in worker.log."""
    if {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}[device]:
        pytest.skip(f"{device} is available here: nothing to warn about")
    job = JobConfig(images=tuple(photos[:2]), backend="dust3r", device=device,
                    options={"weights": weights, "image_size": 224, "iterations": 2})
    result = run(job, Progress())
    assert len(result.images) == 2 and all(np.isfinite(im.cam2world).all() for im in result.images)
    # The alignment may add its own warnings about the random-weight predictions after it.
    assert result.warnings[0] == (f"{device.upper()} was requested but the worker's PyTorch "
                                  "cannot use it; DUSt3R ran on the CPU.")
    cpu = run(JobConfig(**{**job.__dict__, "device": "cpu"}), Progress())
    assert not any("was requested" in w for w in cpu.warnings)

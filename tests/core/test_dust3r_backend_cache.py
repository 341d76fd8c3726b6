"""The dust3r backend's predictions cache (damaged files, pruning) and its result warnings (EXIF
focals, a checkpoint run at another resolution than it was trained at), with tiny checkpoints."""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import JobConfig
from core.dust3r.backend import run
from core.dust3r.config import ModelConfig
from core.dust3r.model import Dust3rNet
from core.dust3r.safetensors_io import write_safetensors
from core.predictions import CACHE_FILES_KEPT, PairPredictions
from core.progress import Progress

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_224 = ModelConfig(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=24,
                       dec_depth=1, dec_num_heads=2, head_type="linear", img_size=(224, 224))
CONSTRUCTOR_224 = ("AsymmetricCroCo3DStereo(img_size=(224, 224), head_type='linear', "
                   "enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=24, "
                   "dec_depth=1, dec_num_heads=2)")


def _write_photos(folder, n, exif_focals=None):
    """``n`` random 80x60 JPEG photos; ``exif_focals[k]`` (mm, 35 mm equivalent) or None."""
    rng = np.random.default_rng(5)
    files = []
    for k in range(n):
        exif = Image.Exif()
        if exif_focals and exif_focals[k] is not None:
            exif.get_ifd(0x8769)[41989] = exif_focals[k]  # FocalLengthIn35mmFilm
        path = folder / f"photo{k}.jpg"
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), np.uint8)).save(path, exif=exif)
        files.append(str(path))
    return files


@pytest.fixture()
def weights_224(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny224.pth"
    torch.save({"model": Dust3rNet(TINY_224).state_dict(),
                "args": argparse.Namespace(model=CONSTRUCTOR_224)}, path)
    return str(path)


def _job(files, weights, cache_dir="", **options):
    return JobConfig(images=tuple(files), backend="dust3r", cache_dir=str(cache_dir), options={
        "weights": weights, "image_size": 224, "precision": "fp32", "iterations": 2, **options})


def _run(job):
    stages = []
    result = run(job, Progress(lambda stage, f, m: stages.append(stage)))
    return result, "inference" in stages


def _backend_warnings(result):
    """The result's warnings about EXIF focals and the checkpoint (the alignment may add its
    own about random-weight predictions, which are not under test here)."""
    return [w for w in result.warnings
            if w.startswith(("No EXIF focal", "exif_focal ", "The checkpoint "))
            or "assuming 512" in w]


def test_a_damaged_cache_file_is_logged_and_replaced(tmp_path, weights_224, caplog):
    files = _write_photos(tmp_path, 2)
    job = _job(files, weights_224, tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="core.dust3r.backend"):
        first, ran = _run(job)
    (cached,) = (tmp_path / "cache").glob("pairs-*.npz")
    assert ran and any(str(cached) in r.getMessage() and "written" in r.getMessage()
                       for r in caplog.records)
    good = PairPredictions.load(cached)
    data = cached.read_bytes()
    for damaged in (data[: len(data) // 2], b"", b"plain text, not an npz\n"):
        cached.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="core.dust3r.backend"):
            again, ran = _run(job)
        assert ran, "the network must run again"
        (warning,) = [r.getMessage() for r in caplog.records
                      if r.levelname == "WARNING" and r.name == "core.dust3r.backend"]
        assert f"Ignoring the unreadable cache file {cached}" in warning
        replaced = PairPredictions.load(cached)
        for a, b in zip(good.pts3d_i, replaced.pts3d_i):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(first.images[1].cam2world, again.images[1].cam2world)


def test_cache_keeps_the_most_recently_used_files(tmp_path, weights_224, caplog):
    cache = tmp_path / "cache"
    cache.mkdir()
    # Older cache files of other photos, used one minute apart (oldest first).
    old = [cache / f"pairs-{k:024x}.npz" for k in range(CACHE_FILES_KEPT + 2)]
    for minutes, path in enumerate(old):
        path.write_bytes(b"x")
        os.utime(path, (1e9 + 60 * minutes, 1e9 + 60 * minutes))
    other = cache / "notes.npz"
    other.write_bytes(b"not ours")
    os.utime(other, (1e9, 1e9))
    files = _write_photos(tmp_path, 2)
    with caplog.at_level(logging.INFO, logger="core.predictions"):
        _run(_job(files, weights_224, cache))
    new = sorted(set(cache.glob("pairs-*.npz")) - set(old))
    assert len(new) == 1
    kept = sorted(cache.glob("pairs-*.npz"))
    assert len(kept) == CACHE_FILES_KEPT and other.exists()
    # The three least recently used went, each named in the log.
    assert set(kept) == set(old[3:]) | set(new)
    removed = [r.getMessage() for r in caplog.records if "Removed" in r.getMessage()]
    assert len(removed) == 3 and all(str(p) in " ".join(removed) for p in old[:3])
    # A cache hit marks the file as used: it is then the newest, and survives the next prunes.
    os.utime(new[0], (1e9, 1e9))
    _, ran = _run(_job(files, weights_224, cache))
    assert not ran
    assert new[0].stat().st_mtime > max(p.stat().st_mtime for p in old[3:])


def test_exif_focal_names_the_photos_without_one(tmp_path, weights_224):
    files = _write_photos(tmp_path, 3, exif_focals=[26, None, 30])
    result, _ = _run(_job(files, weights_224, exif_focal=True))
    assert _backend_warnings(result) == ["No EXIF focal length in photo1.jpg: estimated."]
    expected = 30 / np.hypot(36, 24) * np.hypot(80, 60)  # 35 mm equivalent on the diagonal
    assert result.images[2].K_photo[0, 0] == pytest.approx(expected, rel=1e-9)


def test_exif_focal_without_any_exif_focal_says_it_had_no_effect(tmp_path, weights_224):
    files = _write_photos(tmp_path, 2)
    result, _ = _run(_job(files, weights_224, exif_focal=True))
    assert _backend_warnings(result) == ["exif_focal had no effect: none of the photos has an EXIF focal "
                               "length (35 mm equivalent); all focal lengths were estimated."]
    given, _ = _run(_job(files, weights_224, exif_focal=True, known_focals=[100.0, None]))
    assert _backend_warnings(given) == ["exif_focal was ignored: known_focals or known_intrinsics gives "
                              "the focal lengths."]
    plain, _ = _run(_job(files, weights_224))
    assert _backend_warnings(plain) == []


def test_a_checkpoint_at_another_resolution_warns_also_from_the_cache(tmp_path, weights_224):
    files = _write_photos(tmp_path, 2)
    job = _job(files, weights_224, tmp_path / "cache", image_size=512)
    expected = ("The checkpoint tiny224 was trained on 224 px images; running it at 512 px "
                "gives poor geometry. Use a resolution of 224 (--resolution 224) or a 512 px "
                "checkpoint.")
    result, ran = _run(job)
    assert ran and _backend_warnings(result) == [expected] and result.warnings[0] == expected
    cached, ran = _run(job)
    assert not ran and _backend_warnings(cached) == [expected]
    same_size, _ = _run(_job(files, weights_224, tmp_path / "cache"))
    assert _backend_warnings(same_size) == []


def test_a_linear_safetensors_without_config_warns_that_its_size_was_assumed(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "tiny_hf"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors",
                      {k: v.numpy() for k, v in Dust3rNet(TINY_224).state_dict().items()})
    files = _write_photos(tmp_path, 2)
    result, _ = _run(_job(files, str(folder)))
    (warning,) = _backend_warnings(result)
    assert str(folder / "model.safetensors") in warning and "assuming 512" in warning

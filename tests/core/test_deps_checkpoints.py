"""core/checkpoints: the weights folder's status, and Locate (identify with the worker's loader in
the worker's interpreter, refuse the wrong kind by name, then copy or link).

Real released checkpoints are 2 GB, so the files here are small DUSt3R-shaped networks saved
with torch (a size that is not a released one) and foreign files; the by-name refusal between
released kinds is checked on :func:`check_kind` with the registry's presets.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import venv
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from core import checkpoints  # noqa: E402
from core.dust3r.config import ModelConfig  # noqa: E402
from core.dust3r.download import weights_file  # noqa: E402
from core.dust3r.model import Dust3rNet  # noqa: E402
from core.dust3r.registry import WEIGHTS  # noqa: E402
from core.dust3r.safetensors_io import write_safetensors  # noqa: E402
from core.errors import DependencyError, WeightsError  # noqa: E402

TINY = ModelConfig(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=2,
                   dec_num_heads=2, head_type="linear", img_size=(64, 64))
TINY_ARGS = ("AsymmetricCroCo3DStereo(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, "
             "dec_embed_dim=32, dec_depth=2, dec_num_heads=2, head_type='linear', "
             "img_size=(64, 64))")
# A registry entry for a model of TINY's size: lets the accepted path run with a real identify.
TINY_INFO = dataclasses.replace(WEIGHTS["DUSt3R_ViTLarge_BaseDecoder_224_linear"],
                                name="tiny_linear", preset=None)


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory) -> Path:
    import argparse

    path = tmp_path_factory.mktemp("ckpt") / "downloaded.pth"
    model = Dust3rNet(TINY)
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=TINY_ARGS)}, path)
    return path


def test_identify_runs_the_workers_loader(tiny_pth):
    assert checkpoints.identify(tiny_pth, sys.executable) is None  # DUSt3R, not a released size


def test_locate_refuses_an_unreleased_size_and_copies_nothing(tiny_pth, tmp_path):
    info = WEIGHTS["DUSt3R_ViTLarge_BaseDecoder_512_dpt"]
    with pytest.raises(WeightsError, match=rf"{tiny_pth}.*not one of the released.*{info.name}"):
        checkpoints.place(tiny_pth, info, tmp_path / "weights", sys.executable)
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").iterdir())


def test_locate_refuses_a_foreign_file_with_the_loaders_reason(tmp_path):
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, foreign)
    with pytest.raises(WeightsError, match=r"resnet\.pth is not a DUSt3R checkpoint"):
        checkpoints.place(foreign, WEIGHTS["DUSt3R_ViTLarge_BaseDecoder_512_dpt"],
                          tmp_path / "weights", sys.executable)
    not_a_file = tmp_path / "missing.pth"
    with pytest.raises(WeightsError, match="missing.pth does not exist"):
        checkpoints.place(not_a_file, TINY_INFO, tmp_path / "weights", sys.executable)


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_check_kind_names_the_file_and_both_kinds(name, tmp_path):
    wanted = WEIGHTS[name]
    checkpoints.check_kind(wanted.preset, wanted, tmp_path / "f.pth")
    for other in WEIGHTS.values():
        if other.preset != wanted.preset:
            with pytest.raises(WeightsError) as info:
                checkpoints.check_kind(other.preset, wanted, tmp_path / "f.pth")
            message = str(info.value)
            assert str(tmp_path / "f.pth") in message
            assert f"is the {other.name} checkpoint, not {wanted.name}" in message


@pytest.mark.parametrize("link", [False, True])
def test_locate_places_pth_where_the_worker_finds_it(tiny_pth, tmp_path, link):
    folder = tmp_path / "weights"
    placed = checkpoints.place(tiny_pth, TINY_INFO, folder, sys.executable, link=link)
    assert placed == weights_file(TINY_INFO, folder)
    assert placed.is_symlink() == link
    assert placed.read_bytes() == tiny_pth.read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["tiny_linear.pth"]  # no .tmp left
    assert checkpoints.place(placed, TINY_INFO, folder, sys.executable) == placed  # in place


def test_locate_places_safetensors_with_its_config(tmp_path):
    src = tmp_path / "hf"
    src.mkdir()
    state = {k: v.numpy() for k, v in Dust3rNet(TINY).state_dict().items()}
    write_safetensors(src / "model.safetensors", state)
    (src / "config.json").write_text(json.dumps(
        {"enc_embed_dim": 32, "enc_depth": 2, "enc_num_heads": 2, "dec_embed_dim": 32,
         "dec_depth": 2, "dec_num_heads": 2, "head_type": "linear", "img_size": [64, 64]}))
    folder = tmp_path / "weights"
    placed = checkpoints.place(src, TINY_INFO, folder, sys.executable)
    assert placed == checkpoints.safetensors_file(TINY_INFO, folder)
    assert (placed.parent / "config.json").read_text() == (src / "config.json").read_text()


def test_locate_without_torch_says_to_install_it(tiny_pth, tmp_path):
    venv.EnvBuilder(with_pip=False).create(tmp_path / "bare")
    with pytest.raises(DependencyError, match="needs torch.*Install PyTorch"):
        checkpoints.identify(tiny_pth, str(tmp_path / "bare" / "bin" / "python"))


def test_folder_status_lists_present_partial_and_missing(tmp_path):
    names = list(WEIGHTS)
    dpt, linear, small = (WEIGHTS[n] for n in names)
    weights_file(dpt, tmp_path).write_bytes(b"x" * 10)
    checkpoints.safetensors_file(linear, tmp_path).parent.mkdir()
    checkpoints.safetensors_file(linear, tmp_path).write_bytes(b"y" * 7)
    (tmp_path / (small.pth_file + ".part")).write_bytes(b"z" * 3)
    status = {s.info.name: s for s in checkpoints.folder_status(tmp_path)}
    assert list(status) == names
    assert (status[dpt.name].path, status[dpt.name].size_bytes) == (weights_file(dpt, tmp_path), 10)
    assert status[linear.name].size_bytes == 7
    assert (status[small.name].path, status[small.name].partial_bytes) == (None, 3)

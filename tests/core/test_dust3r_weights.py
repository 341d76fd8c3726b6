"""Loading checkpoints: .pth (restricted unpickling) and safetensors, and refusing bad files."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch

from core.dust3r.config import PRESETS
from core.dust3r.registry import WEIGHTS
from core.dust3r.safetensors_io import read_safetensors, write_safetensors
from core.dust3r.weights import (
    canonical_state_dict,
    config_from_state_dict,
    load_model,
    parse_constructor_string,
)
from core.errors import WeightsError

pytestmark = [pytest.mark.shared, pytest.mark.usefixtures("one_torch_thread")]
OUTPUTS = ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")




def constructor_string(args: dict) -> str:
    """An ``args.model`` string in the official style, from constructor arguments."""
    parts = []
    for key, value in args.items():
        if isinstance(value, str) and value.startswith("("):
            pass  # already written as a tuple, as in checkpoint_keys.json
        elif key in ("depth_mode", "conf_mode"):
            value = "(" + ", ".join(repr(v) if isinstance(v, str) and v[-3:] != "inf" else str(v)
                                    for v in value) + ")"
        elif isinstance(value, list):
            value = str(tuple(value))
        elif isinstance(value, str):
            value = repr(value)
        parts.append(f"{key}={value}")
    return f"AsymmetricCroCo3DStereo({', '.join(parts)})"


@pytest.fixture(scope="module", params=["linear", "dpt"])
def golden(request, shared_dir):
    z = np.load(shared_dir / "reference" / f"golden_{request.param}.npz")
    return {
        "args": json.loads(z["config_json"].tobytes()),
        "state": {k[2:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("w/")},
        "pairs": [{name: z[f"pair{p}/{name}"] for name in ("img1", "img2", *OUTPUTS)}
                  for p in range(2)],
    }


def assert_reproduces(model, golden):
    for pair in golden["pairs"]:
        with torch.no_grad():
            outputs = model(torch.from_numpy(pair["img1"]), torch.from_numpy(pair["img2"]))
        for name, ours in zip(OUTPUTS, outputs):
            np.testing.assert_allclose(ours.numpy(), pair[name], rtol=1e-4, atol=1e-5 *
                                       np.abs(pair[name]).max(), err_msg=name)


def save_pth(path, state, args_string, **extra_args):
    torch.save({"model": state, "args": argparse.Namespace(model=args_string, **extra_args)}, path)


def test_pth_with_args_namespace_loads_and_reproduces_golden(tmp_path, golden):
    path = tmp_path / "small.pth"
    save_pth(path, golden["state"], constructor_string(golden["args"]), lr=1e-4, epochs=10)
    model = load_model(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.config.enc_num_heads == golden["args"]["enc_num_heads"]  # read from the string
    assert_reproduces(model, golden)


def test_safetensors_with_config_json_loads_and_reproduces_golden(tmp_path, golden):
    # Keep only one of the DPT alias names, the other one than the .pth test keeps first.
    state = {k: v.numpy() for k, v in golden["state"].items() if "_rn.weight" not in k
             or ".layer_rn." in k}
    write_safetensors(tmp_path / "model.safetensors", state, {"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(golden["args"]))
    assert_reproduces(load_model(tmp_path), golden)


def test_safetensors_round_trip_including_bfloat16(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 1e-3], np.float32)  # 3.140625 and ±1.0 fit bf16
    write_safetensors(tmp_path / "a.safetensors", {"f16": values.astype(np.float16),
                                                   "f32": values, "i64": np.arange(3)})
    arrays, meta = read_safetensors(tmp_path / "a.safetensors")
    assert list(arrays) == ["f16", "f32", "i64"] and meta == {}
    np.testing.assert_array_equal(arrays["f32"], values)
    np.testing.assert_array_equal(arrays["f16"], values.astype(np.float16))
    # bfloat16: torch writes it, our reader widens it exactly.
    raw = (tmp_path / "a.safetensors").read_bytes()
    bf16 = torch.from_numpy(values).to(torch.bfloat16)
    header = json.dumps({"b": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(len(header).to_bytes(8, "little") + header
                                             + bf16.view(torch.int16).numpy().tobytes())
    arrays, _ = read_safetensors(tmp_path / "b.safetensors")
    np.testing.assert_array_equal(arrays["b"], bf16.float().numpy())
    assert raw[:8] != b"\0" * 8


@pytest.mark.parametrize("checkpoint, preset", [(w.name, w.preset) for w in WEIGHTS.values()])
def test_release_layouts_give_their_presets(shared_dir, checkpoint, preset):
    """The architecture read from a released file's keys, shapes and constructor string."""
    layout = json.loads((shared_dir / "reference" / "checkpoint_keys.json").read_text())[checkpoint]
    with torch.device("meta"):
        state = {k: torch.empty(shape) for k, shape in layout["keys"].items()}
    declared = parse_constructor_string(constructor_string(layout["constructor"]))
    assert declared["img_size"] == PRESETS[preset].img_size
    config = config_from_state_dict(canonical_state_dict(state, checkpoint), declared, checkpoint)
    assert config == PRESETS[preset]


def test_truncated_files_are_refused_by_name(tmp_path, golden):
    pth = tmp_path / "cut.pth"
    save_pth(pth, golden["state"], constructor_string(golden["args"]))
    pth.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    with pytest.raises(WeightsError, match="cut.pth.*(truncated|cannot be read)"):
        load_model(pth)
    folder = tmp_path / "st"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors",
                      {k: v.numpy() for k, v in golden["state"].items()})
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(WeightsError, match="model.safetensors is truncated"):
        load_model(folder / "model.safetensors")


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", r"empty.pth is empty \(0 bytes\)\. Download it again"),
     (b"<!DOCTYPE html><html><body>Sign in</body></html>",
      r"empty.pth is not a PyTorch checkpoint \(it looks like a web page\): it starts with b'<!DOCTYPE"),
     (bytes(range(7, 200)), r"empty.pth is not a PyTorch checkpoint: it starts with b'\\x07")],
)
def test_files_that_are_no_checkpoint_say_what_they_are(tmp_path, content, expected):
    # Not "contains Python objects": a saved error page or an empty download is no pickle at all.
    path = tmp_path / "empty.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=expected):
        load_model(path)


def test_foreign_state_dicts_are_refused_by_name(tmp_path, golden):
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, other)
    with pytest.raises(WeightsError, match="resnet.pth is not a DUSt3R checkpoint"):
        load_model(other)
    # A MASt3R-like head (extra tensors) and a CroCo pre-training checkpoint (no second decoder).
    extra = dict(golden["state"], **{"downstream_head1.head_local_features.fc1.weight":
                                     torch.zeros(4, 4)})
    save_pth(tmp_path / "mast3r.pth", extra, constructor_string(golden["args"]))
    with pytest.raises(WeightsError, match="mast3r.pth.*1 unexpected.*head_local_features"):
        load_model(tmp_path / "mast3r.pth")
    croco = {k: v for k, v in golden["state"].items() if not k.startswith("dec_blocks2.")}
    save_pth(tmp_path / "croco.pth", croco, constructor_string(golden["args"]))
    with pytest.raises(WeightsError, match=r"croco.pth.*missing \(dec_blocks2\."):
        load_model(tmp_path / "croco.pth")


def test_declared_sizes_that_contradict_the_tensors_are_refused(tmp_path, golden):
    args = dict(golden["args"], enc_num_heads=5)  # 64 channels cannot split into 5 heads
    save_pth(tmp_path / "odd.pth", golden["state"], constructor_string(args))
    with pytest.raises(WeightsError, match="unsupported architecture"):
        load_model(tmp_path / "odd.pth")
    (tmp_path / "config.json").write_text(json.dumps(dict(golden["args"], enc_depth=3)))
    write_safetensors(tmp_path / "model.safetensors",
                      {k: v.numpy() for k, v in golden["state"].items()})
    with pytest.raises(WeightsError, match="declares enc_depth=3 but its tensors have enc_depth=2"):
        load_model(tmp_path)


class _Exploit:
    """Unpickling this would run a shell command; the restricted loader must never call it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_a_disallowed_global_is_refused(tmp_path, golden):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"model": golden["state"], "args": _Exploit(marker)}, path)
    with pytest.raises(WeightsError, match=r"evil.pth was refused.*\(\w+\.system\)"):
        load_model(path)
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "nothing.pth")

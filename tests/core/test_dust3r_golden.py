"""Our DUSt3R network against outputs of the official code (``../shared/reference``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.dust3r.config import PRESETS, ModelConfig
from core.dust3r.model import Dust3rNet
from core.dust3r.weights import canonical_state_dict

pytestmark = [pytest.mark.shared, pytest.mark.usefixtures("one_torch_thread")]
OUTPUTS = ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")




def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """Largest error relative to the reference value: per 3D point (vector norm) or per scalar."""
    if ref.shape[-1] == 3:
        return float((np.linalg.norm(ours - ref, axis=-1) / np.linalg.norm(ref, axis=-1)).max())
    return float((np.abs(ours - ref) / np.abs(ref)).max())


@pytest.mark.parametrize("head", ["linear", "dpt"])
def test_network_reproduces_official_outputs(shared_dir, head):
    golden = np.load(shared_dir / "reference" / f"golden_{head}.npz")
    config = ModelConfig.from_constructor_args(json.loads(golden["config_json"].tobytes()))
    assert config.head_type == head
    model = Dust3rNet(config).eval()
    state = {k[2:]: torch.from_numpy(golden[k]) for k in golden.files if k.startswith("w/")}
    model.load_state_dict(canonical_state_dict(state, "golden"), strict=True)
    for pair in ("pair0", "pair1"):  # landscape 64x96, portrait 96x64
        img1 = torch.from_numpy(golden[f"{pair}/img1"])
        with torch.no_grad():
            outputs = model(img1, torch.from_numpy(golden[f"{pair}/img2"]))
        for name, ours in zip(OUTPUTS, outputs):
            ref = golden[f"{pair}/{name}"]
            assert ours.dtype == torch.float32 and ours.shape == ref.shape, (pair, name)
            assert relative_error(ours.numpy(), ref) < 1e-4, (pair, name)


def test_a_swapped_parameter_breaks_the_match(shared_dir):
    """The comparison above is sensitive: swapping the two decoders' last MLP changes outputs."""
    golden = np.load(shared_dir / "reference" / "golden_linear.npz")
    config = ModelConfig.from_constructor_args(json.loads(golden["config_json"].tobytes()))
    model = Dust3rNet(config)
    state = {k[2:]: torch.from_numpy(golden[k]) for k in golden.files if k.startswith("w/")}
    key1, key2 = "dec_blocks.2.mlp.fc2.weight", "dec_blocks2.2.mlp.fc2.weight"
    state[key1], state[key2] = state[key2], state[key1]
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        pts3d_1 = model(torch.from_numpy(golden["pair0/img1"]),
                        torch.from_numpy(golden["pair0/img2"]))[0]
    assert relative_error(pts3d_1.numpy(), golden["pair0/pts3d_1"]) > 1e-3


@pytest.mark.parametrize("preset, checkpoint", [
    ("512_dpt", "DUSt3R_ViTLarge_BaseDecoder_512_dpt"),
    ("512_linear", "DUSt3R_ViTLarge_BaseDecoder_512_linear"),
    ("224_linear", "DUSt3R_ViTLarge_BaseDecoder_224_linear"),
])
def test_preset_key_set_equals_released_checkpoint(shared_dir, preset, checkpoint):
    layout = json.loads((shared_dir / "reference" / "checkpoint_keys.json").read_text())[checkpoint]
    with torch.device("meta"):
        model = Dust3rNet(PRESETS[preset])
        released = {k: torch.empty(shape) for k, shape in layout["keys"].items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # The only difference: the DPT projection alias names, dropped on purpose when loading.
    aliases = {k for k in released if ".scratch.layer_rn." in k}
    assert len(aliases) == (8 if preset == "512_dpt" else 0)
    assert set(ours) == set(released) - aliases
    canonical = canonical_state_dict(released, checkpoint)
    assert {k: tuple(v.shape) for k, v in canonical.items()} == ours
    n_unique = sum(v.numel() for k, v in model.state_dict().items())
    assert n_unique == (571_171_208 if preset == "512_dpt" else 532_342_784)

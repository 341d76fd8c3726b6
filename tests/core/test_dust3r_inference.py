"""The inference engine against the plain per-pair forward pass (tiny random network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.dust3r.config import ModelConfig
from core.dust3r.inference import run_pairs
from core.dust3r.model import Dust3rNet
from core.errors import Cancelled, InputError, OutOfMemoryError
from core.images import LoadedImage, normalize
from core.pairs import make_pairs
from core.progress import CancelToken, Progress

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ModelConfig(enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=24,
                   dec_depth=4, dec_num_heads=2, dpt_layer_dims=(8, 8, 16, 16),
                   dpt_feature_dim=16, dpt_last_dim=8)
SIZES = [(32, 48), (48, 32), (32, 48), (32, 32), (48, 32)]  # (H, W), mixed orientations




def tiny_model(head_type: str, seed: int = 0) -> Dust3rNet:
    torch.manual_seed(seed)
    model = Dust3rNet(ModelConfig(**{**TINY.__dict__, "head_type": head_type})).eval()
    with torch.no_grad():
        for p in model.parameters():  # every parameter random, so a mix-up shows
            p.copy_(torch.randn_like(p) * 0.3 / max(1, p[0].numel()) ** 0.5)
    return model


def make_images(sizes=SIZES) -> list[LoadedImage]:
    rng = np.random.default_rng(1)
    return [LoadedImage(file=f"img{k}.png", photo_size=(w * 2, h * 2),
                        photo_from_map=np.diag([2.0, 2.0, 1.0]),
                        rgb=rng.integers(0, 256, (h, w, 3), np.uint8))
            for k, (h, w) in enumerate(sizes)]


def per_pair_reference(model, images, pairs):
    """The reference's way: the whole network per pair, both images encoded each time."""
    out = []
    with torch.no_grad():
        for i, j in pairs:
            img1 = torch.from_numpy(normalize(images[i].rgb))[None]
            img2 = torch.from_numpy(normalize(images[j].rgb))[None]
            out.append([t[0].numpy() for t in model(img1, img2)])
    return out


def relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-point relative difference (vector norm for pointmaps)."""
    if b.ndim == 3:
        return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)
    return np.abs(a - b) / np.abs(b)


@pytest.mark.parametrize("head_type", ["dpt", "linear"])
def test_engine_fp32_equals_the_per_pair_forward(head_type):
    model, images = tiny_model(head_type), make_images()
    pairs = make_pairs(len(images), "complete")
    preds = run_pairs(model, images, pairs, precision="fp32", batch_size=3)
    reference = per_pair_reference(model, images, pairs)
    assert preds.edges.tolist() == [list(p) for p in pairs]
    for e, ref in enumerate(reference):
        ours = (preds.pts3d_i[e], preds.conf_i[e], preds.pts3d_j[e], preds.conf_j[e])
        for a, b in zip(ours, ref):
            assert a.dtype == np.float32 and a.shape == b.shape
            assert relative(a, b).max() < 1e-5, e
    assert [v.file for v in preds.views] == [im.file for im in images]
    np.testing.assert_array_equal(preds.views[1].colors, images[1].rgb)


def test_engine_bf16_is_close_to_fp32():
    model, images = tiny_model("dpt"), make_images()
    pairs = make_pairs(len(images), "complete")
    fp32 = run_pairs(model, images, pairs, precision="fp32")
    bf16 = run_pairs(model, images, pairs, precision="bf16")
    # Same arithmetic as plain autocast over the per-pair forward (weights cast once instead).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = per_pair_reference(model, images, pairs)
    for e, ref in enumerate(reference):
        assert relative(bf16.pts3d_j[e], ref[2]).max() < 1e-5
    # The float32 weights are back: the exact mode still reproduces itself.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    again = run_pairs(model, images, pairs, precision="fp32")
    assert all(np.array_equal(a, b) for a, b in zip(again.pts3d_j, fp32.pts3d_j))
    rel = np.concatenate([relative(a, b).ravel() for a, b in zip(bf16.pts3d_j, fp32.pts3d_j)])
    assert np.median(rel) < 0.02 and np.median(rel) > 0  # bf16 really was used
    conf_rel = np.concatenate([relative(a, b).ravel() for a, b in zip(bf16.conf_i, fp32.conf_i)])
    assert np.median(conf_rel) < 0.02


def test_each_image_is_encoded_once_in_same_size_batches():
    model, images = tiny_model("linear"), make_images()
    calls = []
    encode = model.encode
    model.encode = lambda img: calls.append(tuple(img.shape)) or encode(img)
    run_pairs(model, images, make_pairs(len(images), "complete"), precision="fp32", batch_size=2)
    # 5 images: three shapes -> batches (2 x 32x48), (2 x 48x32), (1 x 32x32)
    assert sorted(calls) == sorted([(2, 3, 32, 48), (2, 3, 48, 32), (1, 3, 32, 32)])


def test_progress_per_batch_and_cancel_between_batches():
    model, images = tiny_model("linear"), make_images()
    pairs = make_pairs(len(images), "complete")  # 20 pairs
    reports = []
    run_pairs(model, images, pairs, precision="fp32", batch_size=4,
              progress=Progress(lambda *r: reports.append(r)))
    fractions = [f for _, f, _ in reports]
    # start + 3 encoder batches + pair batches of <= 4 within 5 shape groups
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(reports) >= 1 + 3 + 20 // 4 and {s for s, _, _ in reports} == {"inference"}

    token = CancelToken()
    seen = []

    def cancel_on_third(stage, fraction, message):
        seen.append(message)
        if len(seen) == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        run_pairs(model, images, pairs, precision="fp32", batch_size=4,
                  progress=Progress(cancel_on_third, token))
    assert len(seen) == 3  # nothing ran after the cancel


class _SmallMemoryNet(Dust3rNet):
    """Raises torch's out-of-memory error for decoder batches above ``limit`` pairs."""

    limit = 1

    def decode(self, enc1, enc2, grid1, grid2):
        if enc1.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().decode(enc1, enc2, grid1, grid2)


def test_out_of_memory_halves_the_batch_then_gives_a_clear_error():
    reference = tiny_model("linear")
    model = _SmallMemoryNet(reference.config).eval()
    model.load_state_dict(reference.state_dict())
    images = make_images([(32, 48)] * 4)
    pairs = make_pairs(4, "complete")
    model.limit = 2
    preds = run_pairs(model, images, pairs, precision="fp32", batch_size=8)
    expected = run_pairs(reference, images, pairs, precision="fp32", batch_size=8)
    for a, b in zip(preds.pts3d_j, expected.pts3d_j):
        assert relative(a, b).max() < 1e-5
    model.limit = 0
    with pytest.raises(OutOfMemoryError, match="smaller pair graph"):
        run_pairs(model, images, pairs, precision="fp32", batch_size=4)


def test_bad_arguments():
    model, images = tiny_model("linear"), make_images()
    with pytest.raises(InputError, match="precision"):
        run_pairs(model, images, [(0, 1)], precision="fp8")
    with pytest.raises(InputError, match="0..4"):
        run_pairs(model, images, [(0, 5)])
    with pytest.raises(InputError, match="batch_size"):
        run_pairs(model, images, [(0, 1)], batch_size=0)
    images[1].rgb = images[1].rgb[:40]
    with pytest.raises(InputError, match="img1.png: network image 32x40 is not a multiple of 16"):
        run_pairs(model, images, [(0, 1)])

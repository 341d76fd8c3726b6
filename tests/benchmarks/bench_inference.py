"""Benchmark: pairwise DUSt3R inference, the reference's way vs our engine (CPU, random weights).

Modes, each in a fresh subprocess (so that peak memory, ``ru_maxrss``, is per mode):

* ``official``: the reference's way: the whole network per directed pair, both images encoded
  every time, float32, batch 1;
* ``fp32``: our engine, every image encoded once, exact float32;
* ``bf16``: our engine with bfloat16 autocast (heads in float32).

A complete graph of 8 images (56 directed pairs) at 512x384 with the 512 DPT network takes an
hour or more on a small CPU, so by default every mode runs on a representative subset and the
totals are extrapolated from measured unit costs (labelled as such): the engine modes encode all
``--images`` images and decode ``--sample-pairs`` pairs; ``official`` runs ``--sample-pairs`` full
pairs. A small complete graph (``--validate-images``) is then run end to end in every mode to
check the extrapolation. Pointmap differences are measured on the sampled pairs.

    python tests/benchmarks/bench_inference.py               # 8 images, 3 sampled pairs, check on 3
    python tests/benchmarks/bench_inference.py --config tiny --sample-pairs 56 --validate-images 0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

MODES = ("official", "fp32", "bf16")


def build_model(config_name: str):
    """The network with seeded random weights (identical in every subprocess)."""
    import torch

    from core.dust3r.config import PRESETS, ModelConfig
    from core.dust3r.model import Dust3rNet

    config = PRESETS.get(config_name) or ModelConfig(
        enc_embed_dim=128, enc_depth=4, enc_num_heads=2, dec_embed_dim=128, dec_depth=4,
        dec_num_heads=2, dpt_layer_dims=(16, 32, 64, 128), dpt_feature_dim=64, dpt_last_dim=32)
    torch.manual_seed(0)
    return Dust3rNet(config).eval().requires_grad_(False)


def make_images(n: int, height: int, width: int):
    """Smooth random colour images (a 512x384-like input without real content)."""
    from core.images import LoadedImage

    rng = np.random.default_rng(0)
    images = []
    for k in range(n):
        low = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3)).astype(np.float32)
        rgb = np.kron(low, np.ones((32, 32, 1)))[:height, :width]
        rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
        images.append(LoadedImage(f"synthetic{k}.png", (width, height), np.eye(3), rgb))
    return images


def sample_pairs(pairs: list, count: int) -> list:
    """``count`` pairs spread evenly over the graph's pair list."""
    picks = np.linspace(0, len(pairs) - 1, min(count, len(pairs))).round().astype(int)
    return [pairs[k] for k in sorted(set(picks.tolist()))]


def child(mode: str, opts: dict) -> dict:
    """Run one mode in this (fresh) process; return timings, memory and the output file."""
    import torch

    from core.dust3r.inference import run_pairs
    from core.images import normalize
    from core.pairs import make_pairs
    from core.progress import Progress

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    model = build_model(opts["config"])
    rss_model_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    images = make_images(opts["n_images"], opts["height"], opts["width"])
    pairs = make_pairs(len(images), "complete")
    run = pairs if opts["complete"] else sample_pairs(pairs, opts["sample_pairs"])
    out: dict = {"mode": mode, "n_images": len(images), "n_pairs_run": len(run),
                 "rss_model_mb": rss_model_mb, "threads": torch.get_num_threads()}
    outputs = []
    if mode == "official":
        with torch.inference_mode():
            start = time.perf_counter()
            for i, j in run:
                img1 = torch.from_numpy(normalize(images[i].rgb))[None]
                img2 = torch.from_numpy(normalize(images[j].rgb))[None]
                outputs.append(model(img1, img2)[2][0].numpy())
            out["total_s"] = time.perf_counter() - start
        out["encode_s_per_image"], out["decode_s_per_pair"] = 0.0, out["total_s"] / len(run)
        out["full_pair_s"] = out["total_s"] / len(run)
    else:
        stamps = []
        progress = Progress(lambda stage, f, msg: stamps.append((time.perf_counter(), msg)))
        if not opts["complete"]:  # encode every image, as a run of the whole graph would
            needed = {k for pair in run for k in pair}
            run_all = run + [(k, k) for k in range(len(images)) if k not in needed]
        else:
            run_all = run
        start = time.perf_counter()
        preds = run_pairs(model, images, run_all, precision=mode, batch_size=opts["batch_size"],
                          progress=progress)
        out["total_s"] = time.perf_counter() - start
        encoded = max(t for t, msg in stamps if msg.startswith("encoded"))
        n_encoded = len({k for pair in run_all for k in pair})
        out["encode_s_per_image"] = (encoded - start) / n_encoded
        # The (k, k) padding pairs only force encodings; time the decodes of ``run`` alone.
        decode_stamps = [t for t, msg in stamps if msg.startswith("predicted")]
        out["decode_s_per_pair"] = (decode_stamps[len(run) - 1] - encoded) / len(run) if \
            opts["batch_size"] == 1 else (decode_stamps[-1] - encoded) / len(run_all)
        outputs = [preds.pts3d_j[e] for e in range(len(run))]
    out["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(opts["out_file"], *outputs)
    return out


def run_mode(mode: str, opts: dict, workdir: Path, tag: str) -> dict:
    opts = dict(opts, out_file=str(workdir / f"{tag}_{mode}.npz"))
    proc = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps(opts)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode:
        sys.exit(f"{mode} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["outputs"] = [a for _, a in sorted(np.load(opts["out_file"]).items(),
                                              key=lambda kv: int(kv[0].split("_")[1]))]
    return result


def differences(a: list, b: list) -> tuple[float, float]:
    """Max absolute and median per-point relative difference of two lists of pointmaps."""
    diff = np.concatenate([np.linalg.norm(x - y, axis=-1).ravel() for x, y in zip(a, b)])
    norm = np.concatenate([np.linalg.norm(y, axis=-1).ravel() for y in b])
    return float(diff.max()), float(np.median(diff / norm))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8, help="images in the complete graph")
    parser.add_argument("--sample-pairs", type=int, default=3, help="pairs actually decoded")
    parser.add_argument("--validate-images", type=int, default=3,
                        help="also run a complete graph of this many images end to end (0: no)")
    parser.add_argument("--size", default="512x384", help="WxH of the network images")
    parser.add_argument("--config", default="512_dpt", help="512_dpt | 512_linear | tiny")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return
    width, height = (int(v) for v in args.size.split("x"))
    opts = {"config": args.config, "n_images": args.images, "height": height, "width": width,
            "sample_pairs": args.sample_pairs, "batch_size": args.batch_size,
            "threads": args.threads, "complete": False}
    n, n_pairs = args.images, args.images * (args.images - 1)
    print(f"DUSt3R pairwise inference, config {args.config} with RANDOM weights (timing only), "
          f"{width}x{height}, complete graph of {n} images = {n_pairs} directed pairs, CPU, "
          f"load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        results = {mode: run_mode(mode, opts, Path(tmp), "subset") for mode in MODES}
        print_subset(results, n)
        if args.validate_images > 1:
            m = args.validate_images
            small = dict(opts, n_images=m, complete=True)
            checks = {mode: run_mode(mode, small, Path(tmp), "check") for mode in MODES}
            print(f"\nCHECK: complete graph of {m} images ({m * (m - 1)} pairs) measured end to "
                  "end vs predicted from the unit costs above:")
            for mode, r in checks.items():
                predicted = extrapolated(results[mode], m)
                print(f"  {mode:<9} measured {r['total_s']:8.1f} s, predicted {predicted:8.1f} s "
                      f"({r['total_s'] / predicted - 1:+.0%}); measured speed-up "
                      f"{checks['official']['total_s'] / r['total_s']:.2f}x; "
                      f"RSS peak {r['rss_peak_mb']:.0f} MB")
    print(f"load average at end {os.getloadavg()[0]:.1f}; torch threads "
          f"{results['fp32']['threads']}")


def extrapolated(r: dict, images: int) -> float:
    """Total seconds for a complete graph of ``images`` from a mode's measured unit costs."""
    if r["mode"] == "official":
        return r["full_pair_s"] * images * (images - 1)
    return r["encode_s_per_image"] * images + r["decode_s_per_pair"] * images * (images - 1)


def print_subset(results: dict, n: int) -> None:
    """Print the extrapolated table and the pointmap differences."""
    n_pairs = n * (n - 1)
    base = extrapolated(results["official"], n)
    print(f"\nEXTRAPOLATED to {n} images / {n_pairs} pairs from measured unit costs "
          f"({results['official']['n_pairs_run']} full pairs for 'official'; "
          f"{n} encodings + {results['fp32']['n_pairs_run']} pair decodes for ours):")
    print(f"{'mode':<10}{'encode s/img':>13}{'decode s/pair':>14}{'total s':>10}"
          f"{'s/dir. pair':>12}{'speed-up':>10}{'RSS model MB':>14}{'RSS peak MB':>13}")
    for mode, r in results.items():
        total = extrapolated(r, n)
        enc = "(in pair)" if mode == "official" else f"{r['encode_s_per_image']:.2f}"
        print(f"{mode:<10}{enc:>13}{r['decode_s_per_pair']:>14.2f}{total:>10.1f}"
              f"{total / n_pairs:>12.2f}{base / total:>9.2f}x{r['rss_model_mb']:>14.0f}"
              f"{r['rss_peak_mb']:>13.0f}")
    print("\npointmap differences on the sampled pairs (view 2 in view 1's frame):")
    for a, b in (("fp32", "official"), ("bf16", "fp32")):
        max_abs, med_rel = differences(results[a]["outputs"], results[b]["outputs"])
        print(f"  {a} vs {b}: max abs {max_abs:.3g}, median relative {med_rel:.3g}")
    sys.stdout.flush()

if __name__ == "__main__":
    main()

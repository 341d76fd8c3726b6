"""Accuracy, time and memory of a backend on the real scenes in ``../shared/scenes`` (MANIFEST.md).

Usage (from the repository root):

    python tests/benchmarks/bench_scenes.py --backend classical
    python tests/benchmarks/bench_scenes.py --backend dust3r --weights /path/to/weights.pth
    python tests/benchmarks/bench_scenes.py --known-cameras          # dense depth, GT cameras
    python tests/benchmarks/bench_scenes.py --timing                 # 16 x 640x480 end to end
    python tests/benchmarks/bench_scenes.py --scenes dtu_scan65 --options '{"resolution": 320}'

Each scene runs in its own subprocess, so "peak MB" is that process's ``ru_maxrss`` and "cpu s"
its user + system CPU time ("time s" is wall time, inflated when other jobs share the CPU).

Metrics (MANIFEST.md, "Metrics"):

* Pose (``core.metrics.camera_errors`` and ``pose_accuracy``), over all N(N-1)/2 pairs of the
  scene's images (a pair with an unregistered image counts as a failure): relative rotation
  error = geodesic angle, translation error = sign-free angle between the relative translation
  directions; both independent of the world frame and scale. RRA@15 / RTA@15 = share of pairs
  under 15 degrees; mAA(30) = mean over t = 1..30 degrees of the share of pairs with
  max(rotation, translation error) < t. "(reg)" is mAA(30) over the pairs of registered images.
* Focal: median over registered images of |fx_pred / fx_gt - 1| in the file's pixels.
* Depth (scenes with depth): on the pixels the result keeps (conf > conf_threshold), GT sampled at
  each map pixel's photo pixel; each depth map scaled by median(gt)/median(pred) when the cameras
  were estimated (scale-free), metric with ``--known-cameras``. AbsRel = mean |d - gt| / gt;
  d<1.25 = share with max(d/gt, gt/d) < 1.25; kept = kept pixels with GT / pixels with GT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENES_DIR = REPO_ROOT.parent / "shared" / "scenes"
TIMING_SCENE = "middlebury_templeSR"  # 16 images, 640x480


def load_gt(scene_dir: Path) -> tuple[list[str], list[dict]]:
    gt = json.loads((scene_dir / "gt.json").read_text())
    return [str(scene_dir / f["file"]) for f in gt["frames"]], gt["frames"]


def depth_scores(
    images: list[dict], frames_by_file: dict[str, dict], scene_dir: Path, scale_free: bool
) -> dict:
    """AbsRel, d<1.25 and kept share over all images (pixels pooled)."""
    rel_all, ratio_all, kept_n, gt_n = [], [], 0, 0
    for im in images:
        frame = frames_by_file[im["file"]]
        gt = np.asarray(Image.open(scene_dir / frame["depth"]), np.float64) / 1000.0
        depth, keep, P = im["depth"], im["keep"], im["photo_from_map"]
        h, w = depth.shape
        u, v = np.meshgrid(np.arange(w), np.arange(h))
        up = np.clip(np.round(P[0, 0] * u + P[0, 1] * v + P[0, 2]).astype(int), 0, gt.shape[1] - 1)
        vp = np.clip(np.round(P[1, 0] * u + P[1, 1] * v + P[1, 2]).astype(int), 0, gt.shape[0] - 1)
        g = gt[vp, up]
        has_gt = g > 0
        m = keep & has_gt & np.isfinite(depth) & (depth > 0)
        gt_n += int(has_gt.sum())
        kept_n += int(m.sum())
        if not m.any():
            continue
        d = depth[m].astype(np.float64)
        if scale_free:
            d = d * np.median(g[m]) / np.median(d)
        rel_all.append(np.abs(d - g[m]) / g[m])
        ratio_all.append(np.maximum(d / g[m], g[m] / d))
    if not rel_all:
        return {"AbsRel": float("nan"), "d<1.25": float("nan"), "kept": 0.0}
    rel, ratio = np.concatenate(rel_all), np.concatenate(ratio_all)
    return {
        "AbsRel": float(rel.mean()),
        "d<1.25": float((ratio < 1.25).mean()),
        "kept": kept_n / max(gt_n, 1),
    }


def run_scene(scene: str, args: argparse.Namespace) -> dict:
    """Runs in the child process: reconstruct one scene and score it."""
    sys.path.insert(0, str(REPO_ROOT))
    from core.backends import run_backend
    from core.config import JobConfig
    from core.metrics import camera_errors, load_truth, pose_accuracy
    from core.progress import Progress

    scene_dir = SCENES_DIR / scene
    paths, frames = load_gt(scene_dir)
    frames_by_file = dict(zip(paths, frames))
    truth = load_truth(scene_dir / "gt.json")
    true_cameras = [truth[Path(p).name] for p in paths]
    stage_times: dict[str, float] = {}
    t0 = time.perf_counter()

    def on_progress(stage: str, fraction: float, message: str) -> None:
        stage_times.setdefault(stage, time.perf_counter() - t0)

    row: dict = {"scene": scene, "n": len(paths)}
    has_depth = "depth" in frames[0]
    if args.known_cameras:
        if not has_depth:
            return {**row, "skipped": "no depth GT"}
        from core.classical.mvs import MvsOptions, dense_from_cameras
        from core.images import load_photo

        mvs_options = MvsOptions(**json.loads(args.options or "{}"))
        dense = dense_from_cameras(
            [load_photo(p) for p in paths],
            np.stack([t.K_photo for t in true_cameras]),
            np.stack([t.cam2world for t in true_cameras]),
            mvs_options,
            Progress(on_progress),
        )
        row["time_s"] = time.perf_counter() - t0
        images = [
            {"file": p, "depth": d.depth, "keep": d.conf > 0, "photo_from_map": d.photo_from_map}
            for p, d in zip(paths, dense)
        ]
        row.update(depth_scores(images, frames_by_file, scene_dir, scale_free=False))
        row["registered"] = len(paths)
        return row

    options = json.loads(args.options or "{}")
    if args.backend == "dust3r":
        options.setdefault("weights", args.weights)
    if scene == "tartanair_indoor_seq" and args.backend == "classical":
        options.setdefault("matcher", "sequential")  # an ordered fly-through
    job = JobConfig(images=tuple(paths), backend=args.backend, device="cpu", options=options)
    try:
        result = run_backend(job, Progress(on_progress))
    except Exception as exc:  # noqa: BLE001 - a benchmark reports any failure as a row
        return {**row, "error": f"{type(exc).__name__}: {exc}", "time_s": time.perf_counter() - t0}
    row["time_s"] = time.perf_counter() - t0
    row["stages"] = {k: round(v, 1) for k, v in stage_times.items()}
    row["registered"] = len(result.images)
    errors = camera_errors(result, truth)
    row.update(pose_accuracy(errors))
    if len(errors.files) > 1:
        row["mAA(30) reg"] = pose_accuracy(errors, registered_only=True)["mAA(30)"]
    row["focal_err"] = float(np.median(errors.focal_rel[:, 0]))
    if has_depth:
        images = [
            {
                "file": im.file,
                "depth": im.depth if im.depth is not None else np.full(im.conf.shape, np.nan),
                "keep": im.mask(result.conf_threshold),
                "photo_from_map": im.photo_from_map,
            }
            for im in result.images
        ]
        row.update(depth_scores(images, frames_by_file, scene_dir, scale_free=True))
    row["warnings"] = result.warnings
    return row


def run_child(scene: str, args: argparse.Namespace) -> dict:
    """Run one scene in a subprocess; return its row with the peak resident memory."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--child", scene, "--child-out", str(out)]
        cmd += ["--backend", args.backend, "--weights", args.weights or ""]
        cmd += ["--options", args.options or ""]
        if args.known_cameras:
            cmd.append("--known-cameras")
        # One BLAS/OpenMP thread per process: on a CPU shared with other jobs, more threads spin
        # against each other (measured 20x slower); pycolmap keeps its own thread pool.
        threads = str(args.threads)
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
        proc = subprocess.Popen(cmd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if out.exists():
            row = json.loads(out.read_text())
        else:
            row = {"scene": scene, "error": f"exit {proc.returncode}"}
        row["peak_mb"] = usage.ru_maxrss / 1024.0  # kilobytes on Linux
        # CPU seconds used by the scene's process: less sensitive than wall time to other jobs.
        row["cpu_s"] = usage.ru_utime + usage.ru_stime
        return row


def fmt(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, spec)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    mode = "known cameras (dense only)" if args.known_cameras else f"backend {args.backend}"
    print(f"\n{mode}; options {args.options or '{}'}; {args.threads} torch/BLAS thread(s);")
    print("wall times are inflated when other jobs share the CPU (cpu s is less affected)")
    header = f"{'scene':24s} {'reg':>7s} {'RRA@15':>7s} {'RTA@15':>7s} {'mAA30':>6s} "
    header += f"{'(reg)':>6s} {'f err':>7s} "
    header += f"{'time s':>7s} {'cpu s':>7s} {'peak MB':>8s} "
    header += f"{'AbsRel':>7s} {'d<1.25':>7s} {'kept':>6s}"
    print(header)
    for r in rows:
        if "skipped" in r:
            print(f"{r['scene']:24s} skipped: {r['skipped']}")
            continue
        line = f"{r['scene']:24s} {str(r.get('registered', 0)) + '/' + str(r.get('n', '?')):>7s} "
        line += f"{fmt(r.get('RRA@15'), '.3f'):>7s} {fmt(r.get('RTA@15'), '.3f'):>7s} "
        line += f"{fmt(r.get('mAA(30)'), '.3f'):>6s} {fmt(r.get('mAA(30) reg'), '.3f'):>6s} "
        line += f"{fmt(r.get('focal_err'), '.2%'):>7s} "
        line += f"{fmt(r.get('time_s'), '.1f'):>7s} {fmt(r.get('cpu_s'), '.1f'):>7s} "
        line += f"{fmt(r.get('peak_mb'), '.0f'):>8s} "
        line += f"{fmt(r.get('AbsRel'), '.4f'):>7s} {fmt(r.get('d<1.25'), '.3f'):>7s} "
        line += f"{fmt(r.get('kept'), '.3f'):>6s}"
        print(line)
        if "error" in r:
            print(f"    error: {r['error']}")
        if r.get("stages"):
            print(f"    stage start times (s): {r['stages']}")
        for w in r.get("warnings", []):
            print(f"    warning: {w[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="classical", choices=("classical", "dust3r"))
    parser.add_argument("--weights", default="", help="DUSt3R weights file (dust3r backend)")
    parser.add_argument("--options", default="", help="backend options as JSON")
    parser.add_argument("--scenes", nargs="*", help="scene names (default: all)")
    parser.add_argument("--known-cameras", action="store_true", help="dense depth with GT cameras")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads per scene")
    parser.add_argument("--timing", action="store_true", help=f"end-to-end time on {TIMING_SCENE}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = run_scene(args.child, args)
        Path(args.child_out).write_text(json.dumps(row))
        return
    if not SCENES_DIR.is_dir():
        print(f"{SCENES_DIR} is absent: no scenes to benchmark (they live in ../shared/scenes).")
        return
    if args.backend == "dust3r" and not args.weights and not args.known_cameras:
        parser.error("--backend dust3r needs --weights")
    scenes = args.scenes or sorted(p.name for p in SCENES_DIR.iterdir() if (p / "gt.json").exists())
    if args.timing:
        scenes = [TIMING_SCENE]
    rows = [run_child(scene, args) for scene in scenes]
    print_table(rows, args)


if __name__ == "__main__":
    main()

"""Import speed of the Blender builders: 2 million points, and a 512x384 pointmap mesh.

Run: ``.venv/bin/python tests/benchmarks/bench_import.py`` (or ``.venv-bpy50/bin/python``).
Prints seconds per step (best and median of ``--repeat`` runs). Target: the 2M-point import well
under a second. The machine is shared: read the figures as indicative.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest's load_addon
from conftest import load_addon  # noqa: E402

load_addon()
import bpy  # noqa: E402

from photo_recon.core.result import ImageResult, SceneResult  # noqa: E402
from photo_recon.operators.builders import ImportOptions, import_result  # noqa: E402
from photo_recon.operators.builders.mesh import image_mesh_arrays  # noqa: E402

MAP_W, MAP_H = 512, 384


def synthetic_result(n_images: int, seed: int = 0) -> SceneResult:
    """``n_images`` 512x384 pointmaps of a wavy surface seen by cameras on a circle."""
    rng = np.random.default_rng(seed)
    K = np.array([[400.0, 0, (MAP_W - 1) / 2], [0, 400.0, (MAP_H - 1) / 2], [0, 0, 1]])
    v, u = np.mgrid[0:MAP_H, 0:MAP_W].astype(np.float64)
    images = []
    for k in range(n_images):
        depth = 3.0 + 0.2 * np.sin(u / 20.0) * np.cos(v / 15.0)
        pts_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T * depth[..., None]
        angle = 2 * np.pi * k / n_images
        cam2world = np.eye(4)
        cam2world[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                             [-np.sin(angle), 0, np.cos(angle)]]
        cam2world[:3, 3] = [3 * np.sin(angle), 0, -3 * np.cos(angle)]
        images.append(ImageResult(
            file=f"/nonexistent/view{k}.jpg", photo_size=(MAP_W, MAP_H), K=K, cam2world=cam2world,
            photo_from_map=np.eye(3),
            pts3d_world=(pts_cam @ cam2world[:3, :3].T + cam2world[:3, 3]).astype(np.float32),
            conf=rng.uniform(1.0, 10.0, (MAP_H, MAP_W)).astype(np.float32),
            colors=rng.integers(0, 256, (MAP_H, MAP_W, 3), dtype=np.uint8)))
    return SceneResult(images=images, backend="bench", conf_threshold=0.0)


def timed(label: str, repeat: int, build) -> list[float]:
    """Run ``build`` (returns a collection) ``repeat`` times, removing its objects in between."""
    times = []
    for _ in range(repeat):
        before = {kind: set(getattr(bpy.data, kind)) for kind in KINDS}
        t0 = time.perf_counter()
        collection = build()
        times.append(time.perf_counter() - t0)
        counts = {o.name: len(getattr(o.data, "vertices", getattr(o.data, "points", []))) for o in
                  collection.objects if o.type in ("MESH", "POINTCLOUD")}
        bpy.data.batch_remove([b for kind in KINDS for b in set(getattr(bpy.data, kind)) - before[kind]])
    print(f"{label:48s} best {min(times):.3f} s  median {statistics.median(times):.3f} s  {counts}")
    return times


def evaluated(collection):
    """Evaluate the scene as the viewport does on its first redraw (Mesh to Points runs)."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for obj in collection.objects:
        obj.evaluated_get(depsgraph)
    return collection


KINDS = ("objects", "collections", "meshes", "cameras", "images", "materials", "node_groups",
         "pointclouds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the missing-photo warnings are expected here
    print(f"bpy {bpy.app.version_string}, numpy {np.__version__}")
    many = synthetic_result(11)  # 2.16M pixels; max_points takes exactly 2M of them
    one = synthetic_result(1)
    two_million = ImportOptions(max_points=2_000_000, cameras=False)
    timed("2M points (GN mesh), no cameras", args.repeat,
          lambda: import_result(many, two_million, "bench"))
    timed("2M points (GN mesh) + 11 cameras", args.repeat,
          lambda: import_result(many, ImportOptions(max_points=2_000_000), "bench"))
    timed("2M points, native point cloud", args.repeat,
          lambda: import_result(many, ImportOptions(max_points=2_000_000, cameras=False,
                                                    native_pointcloud=True), "bench"))
    ten = synthetic_result(10)  # 1.97M pixels, all imported
    timed("1.97M points (GN mesh), no max_points", args.repeat,
          lambda: import_result(ten, ImportOptions(cameras=False), "bench"))
    timed("2M points (GN) + first depsgraph evaluation", args.repeat,
          lambda: evaluated(import_result(many, two_million, "bench")))
    timed("mesh 512x384 (1 image), no cameras", args.repeat,
          lambda: import_result(one, ImportOptions(output="MESH", cameras=False), "bench"))
    numpy_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        image_mesh_arrays(one.images[0], np.ones((MAP_H, MAP_W), bool), 0.05)
        numpy_times.append(time.perf_counter() - t0)
    print(f"{'  of which triangulation in numpy':48s} best {min(numpy_times):.3f} s")
    timed("mesh 11 x 512x384 merged, no cameras", args.repeat,
          lambda: import_result(many, ImportOptions(output="MESH", cameras=False), "bench"))


if __name__ == "__main__":
    main()

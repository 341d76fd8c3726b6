"""A backend that "reconstructs" a procedural scene exactly: known cameras, exact pointmaps.

Used to test the wiring (worker, importers, exports) without a network or SfM. The scene, in a
z-up world: a textured floor (the plane ``z = 0``) and a few axis-aligned textured boxes standing
on it; cameras sit on a ring around the origin, above the floor, looking at the scene centre.
Every map pixel's ray is intersected analytically with the floor and the boxes, so depth,
``pts3d_world`` and colours are exact (float64 maths stored as float32).

When the job lists photos, there is one camera per photo and each map grid has the photo's
aspect ratio (``photo_from_map`` scales it to the photo's EXIF-oriented size); the photos' pixels
are not used. Without photos, ``n_images`` cameras of 4:3 images are made up.

numpy only (no torch): it runs anywhere the worker runs. Test-only options can make the job
sleep per step (to cancel it mid-way), crash in several ways, or allocate memory.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import JobConfig, strict_fields
from .errors import InputError
from .progress import Progress
from .result import ImageResult, SceneResult

log = logging.getLogger(__name__)

CRASH_MODES = ("", "exception", "segfault", "exit")


@dataclass(frozen=True)
class SyntheticOptions:
    """Options of the synthetic backend (``JobConfig.options``).

    Attributes:
        n_images: number of cameras when the job lists no photos.
        size: long side of each map grid in pixels.
        seed: scene and camera seed; None = the job's seed.
        sleep_per_step: seconds to sleep after each view (tests cancel mid-job).
        crash: ``"exception"`` raises, ``"segfault"`` dereferences a null pointer, ``"exit"`` calls
            ``os._exit(3)``; each after the first view. ``""`` = no crash.
        allocate_gb: allocate and fill this many GiB before rendering (out-of-memory tests).
        memory_limit_gb: if > 0, cap this process's address space (``RLIMIT_AS``, POSIX) first.
            It limits the whole process: use it only in a worker.
        child_process: start a sleeping child process first (a cancel must take it down too).
        temp_file: leave a file in the temporary folder first (it must not outlive the job).
    """

    n_images: int = 4
    size: int = 64
    seed: int | None = None
    sleep_per_step: float = 0.0
    crash: str = ""
    allocate_gb: float = 0.0
    memory_limit_gb: float = 0.0
    child_process: bool = False
    temp_file: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SyntheticOptions:
        opts = cls(**strict_fields(cls, d, "synthetic backend"))
        if opts.crash not in CRASH_MODES:
            raise InputError(f"Unknown crash mode {opts.crash!r}; use one of {CRASH_MODES}.")
        if opts.n_images < 1 or opts.size < 8:
            raise InputError("The synthetic backend needs n_images >= 1 and size >= 8.")
        return opts


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: ``lo`` and ``hi`` corners ``(3,)`` float64, world units."""

    lo: np.ndarray
    hi: np.ndarray


def make_boxes(rng: np.random.Generator, count: int = 3) -> list[Box]:
    """``count`` boxes standing on the floor within 1.2 units of the origin."""
    boxes = []
    for k in range(count):
        angle = 2 * np.pi * (k + rng.uniform(0.0, 0.5)) / count
        centre = rng.uniform(0.4, 1.0) * np.array([np.cos(angle), np.sin(angle)])
        half = rng.uniform(0.25, 0.45, size=2)
        height = rng.uniform(0.4, 1.0)
        boxes.append(Box(np.array([*(centre - half), 0.0]), np.array([*(centre + half), height])))
    return boxes


def look_at_cam2world(
    centre: np.ndarray,
    target: np.ndarray,
    up: tuple[float, float, float] = (0.0, 0.0, 1.0),
    roll: float = 0.0,
) -> np.ndarray:
    """``(4, 4)`` float64 OpenCV camera-to-world at ``centre`` looking at ``target``; the image's
    up direction (camera -y) leans towards the world direction ``up``, then the camera is turned
    by ``roll`` radians about its optical axis."""
    forward = np.asarray(target, float) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, forward], axis=1)
    c2w[:3, 3] = centre
    return c2w


def ring_cameras(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` cam2world matrices on a ring (radius ~4, height ~2.5) looking near the origin."""
    poses = []
    for k in range(n):
        angle = 2 * np.pi * k / n + rng.uniform(-0.1, 0.1)
        radius, height = rng.uniform(3.5, 4.5), rng.uniform(2.0, 3.0)
        centre = np.array([radius * np.cos(angle), radius * np.sin(angle), height])
        poses.append(look_at_cam2world(centre, np.array([*rng.uniform(-0.2, 0.2, 2), 0.3])))
    return poses


def _procedural_colors(points: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 colours from world points ``(N, 3)`` and a surface id per point ``(N,)``:
    a checkerboard times a few sine waves, with a hue per surface (rich texture everywhere)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    checker = ((np.floor(4 * x) + np.floor(4 * y) + np.floor(4 * z)) % 2).astype(np.float64)
    waves = 0.5 + 0.25 * np.sin(11 * x + 3 * z) * np.cos(13 * y - 5 * z) + 0.2 * np.sin(29 * (x + y + z))
    base = np.stack([np.sin(1.7 * surface + 0.3), np.sin(2.3 * surface + 2.1), np.sin(3.1 * surface + 4.2)], 1)
    rgb = (0.35 + 0.3 * base) * (0.55 + 0.45 * checker[:, None]) + 0.5 * waves[:, None] - 0.15
    return np.clip(rgb * 255.0, 0, 255).astype(np.uint8)


def render_view(
    K: np.ndarray, cam2world: np.ndarray, width: int, height: int, boxes: list[Box]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one view of the scene.

    Args:
        K: ``(3, 3)`` intrinsics on the ``width x height`` map grid (pixel-centre convention).
        cam2world: ``(4, 4)`` OpenCV camera-to-world.

    Returns:
        ``(depth, pts3d_world, colors)``: ``(H, W)`` float64 camera z-depth (inf where nothing is
        hit), ``(H, W, 3)`` float64 world points (NaN where nothing is hit), ``(H, W, 3)`` uint8.
    """
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # z component = 1
    dirs = (rays_cam @ cam2world[:3, :3].T).reshape(-1, 3)  # ray parameter t = camera z-depth
    origin = cam2world[:3, 3]
    depth = np.full(len(dirs), np.inf)
    surface = np.zeros(len(dirs))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dirs[:, 2] < 0, -origin[2] / dirs[:, 2], np.inf)
        depth = np.minimum(depth, t_floor)
        for k, box in enumerate(boxes):  # slab test
            t0 = (box.lo - origin) / dirs
            t1 = (box.hi - origin) / dirs
            t_near = np.nanmax(np.minimum(t0, t1), axis=1)
            t_far = np.nanmin(np.maximum(t0, t1), axis=1)
            hit = (t_near <= t_far) & (t_near > 0) & (t_near < depth)
            depth[hit] = t_near[hit]
            surface[hit] = k + 1
    valid = np.isfinite(depth)
    pts = np.full((len(dirs), 3), np.nan)
    pts[valid] = origin + depth[valid, None] * dirs[valid]
    colors = np.zeros((len(dirs), 3), np.uint8)
    colors[valid] = _procedural_colors(pts[valid], surface[valid])
    return depth.reshape(height, width), pts.reshape(height, width, 3), colors.reshape(height, width, 3)


def _map_grid(photo_size: tuple[int, int], long_side: int) -> tuple[tuple[int, int], np.ndarray]:
    """Map-grid size for a photo and the ``photo_from_map`` affine (pixel-centre convention)."""
    w_photo, h_photo = photo_size
    scale = max(w_photo, h_photo) / long_side
    w, h = max(1, round(w_photo / scale)), max(1, round(h_photo / scale))
    sx, sy = w_photo / w, h_photo / h
    return (w, h), np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _photo_sizes(job: JobConfig, opts: SyntheticOptions) -> list[tuple[str, tuple[int, int]]]:
    if not job.images:
        w = opts.size
        return [(f"synthetic_{k:03d}.png", (w, round(w * 3 / 4))) for k in range(opts.n_images)]
    from .images import load_photo

    return [(f, tuple(load_photo(f).shape[1::-1])) for f in job.images]


def _test_hooks_before(opts: SyntheticOptions) -> None:
    if opts.child_process:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        log.info("started child process %d", child.pid)
    if opts.temp_file:
        handle, path = tempfile.mkstemp(prefix="synthetic-")
        os.close(handle)
        log.info("left temporary file %s", path)
    if opts.memory_limit_gb > 0:
        import resource

        limit = int(opts.memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    if opts.allocate_gb > 0:
        log.info("allocating %.2f GiB as asked", opts.allocate_gb)
        block = np.ones(int(opts.allocate_gb * 2**30) // 8)
        log.info("allocated %d bytes", block.nbytes)


def _test_hooks_after_view(opts: SyntheticOptions, index: int) -> None:
    if opts.sleep_per_step > 0:
        time.sleep(opts.sleep_per_step)
    if index != 0 or not opts.crash:
        return
    log.info("crashing as asked: %s", opts.crash)
    if opts.crash == "exception":
        raise RuntimeError("synthetic crash requested by the job options")
    if opts.crash == "exit":
        os._exit(3)
    ctypes.string_at(0)  # "segfault": reads address 0


def run(job: JobConfig, progress: Progress) -> SceneResult:
    """The synthetic scene as a :class:`SceneResult` (``backend="synthetic"``, conf 1 on hits)."""
    opts = SyntheticOptions.from_dict(job.options)
    rng = np.random.default_rng(job.seed if opts.seed is None else opts.seed)
    _test_hooks_before(opts)
    photos = _photo_sizes(job, opts)
    boxes = make_boxes(rng)
    poses = ring_cameras(rng, len(photos))
    images = []
    for k, ((file, photo_size), cam2world) in enumerate(zip(photos, poses)):
        progress("rendering", k / len(photos), f"view {k + 1}/{len(photos)}")
        (w, h), photo_from_map = _map_grid(photo_size, opts.size)
        f = max(w, h) * rng.uniform(1.3, 1.6)
        K = np.array([[f, 0, (w - 1) / 2 + rng.uniform(-2, 2)], [0, f, (h - 1) / 2 + rng.uniform(-2, 2)], [0, 0, 1]])
        depth, pts, colors = render_view(K, cam2world, w, h, boxes)
        hit = np.isfinite(depth)
        images.append(
            ImageResult(
                file=file,
                photo_size=photo_size,
                K=K,
                cam2world=cam2world,
                photo_from_map=photo_from_map,
                pts3d_world=pts.astype(np.float32),
                conf=hit.astype(np.float32),
                colors=colors,
                depth=np.where(hit, depth, np.nan).astype(np.float32),
            )
        )
        _test_hooks_after_view(opts, k)
    progress("rendering", 1.0, f"{len(images)} views")
    return SceneResult(images=images, backend="synthetic", conf_kind="synthetic", conf_threshold=0.5)


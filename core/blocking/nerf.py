"""Write ``transforms.json`` as NeRF tools (nerfstudio, instant-ngp) read it.

Poses are camera-to-world in OpenGL camera axes (x right, y up, z backwards), which are Blender's:
``transform_matrix = cam2world_opencv @ diag(1, -1, -1, 1)``. Intrinsics are in photo pixels with
the image corner as origin (``cx = W / 2`` for a centred principal point). The top level holds the
first photo's intrinsics; each frame carries its own (nerfstudio reads per-frame values).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..geometry.conventions import cam2world_opencv_to_blender
from ..result import ImageResult, SceneResult
from .colmap import pinhole_params_corner


def _intrinsics(im: ImageResult) -> dict[str, float | int]:
    fx, fy, cx, cy = pinhole_params_corner(im.K_photo)
    w, h = (int(v) for v in im.photo_size)
    return {
        "camera_angle_x": 2.0 * math.atan(w / (2.0 * fx)),
        "camera_angle_y": 2.0 * math.atan(h / (2.0 * fy)),
        "fl_x": fx,
        "fl_y": fy,
        "cx": cx,
        "cy": cy,
        "w": w,
        "h": h,
    }


def _relative_path(file: str, base: Path) -> str:
    """``file`` relative to ``base`` (as the tools resolve it), absolute if on another drive."""
    try:
        return Path(os.path.relpath(Path(file).resolve(), base.resolve())).as_posix()
    except ValueError:
        return Path(file).resolve().as_posix()


def transforms_dict(result: SceneResult, base_dir: str | Path, ply_file: str | None = None) -> dict:
    """The ``transforms.json`` content, with photo paths relative to ``base_dir``.

    Args:
        result: the scene.
        base_dir: folder the JSON file will be in.
        ply_file: optional point cloud path (relative to ``base_dir``) for ``ply_file_path``,
            which nerfstudio's splatting uses as initial points.
    """
    base = Path(base_dir)
    frames = []
    for im in result.images:
        frame = {
            # The intrinsics are for the upright photo; NeRF tools read the stored pixels.
            "file_path": _relative_path(im.upright_file, base),
            "transform_matrix": cam2world_opencv_to_blender(im.cam2world).tolist(),
        }
        frame.update(_intrinsics(im))
        frames.append(frame)
    content = dict(_intrinsics(result.images[0])) if result.images else {}
    if ply_file is not None:
        content["ply_file_path"] = ply_file
    content["frames"] = frames
    return content


def write_transforms_json(
    result: SceneResult, path: str | Path, ply_file: str | None = None
) -> Path:
    """Write ``transforms.json`` at ``path`` (see :func:`transforms_dict`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(transforms_dict(result, path.parent, ply_file), indent=2))
    return path

"""Depth and confidence maps of each photo as Blender images, as the reference demo shows them:
depth divided by the largest depth of the scene (grey), confidence divided by the largest
confidence, in a jet colour ramp (blue = low, red = high)."""

from __future__ import annotations

import bpy
import numpy as np

from ...core.result import SceneResult
from .datablocks import CreatedData, id_name
from .mesh import camera_depth


def jet(values: np.ndarray) -> np.ndarray:
    """``(..., 3)`` float32 RGB in 0..1 of ``values`` in 0..1 on the classic jet ramp
    (dark blue, blue, cyan, yellow, red, dark red; piecewise linear)."""
    x = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], np.float32)  # where R, G, B peak
    return np.clip(1.5 - np.abs(4.0 * (x - centres)), 0.0, 1.0)


def map_colors(result: SceneResult) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image ``(depth_rgb, conf_rgb)``, each ``(H, W, 3)`` float32 in 0..1, top row first.

    Unknown depths are black. Normalised over all images, so maps compare across photos.
    """
    depths = [np.nan_to_num(camera_depth(im), nan=0.0, posinf=0.0, neginf=0.0) for im in result.images]
    max_depth = max(float(d.max()) for d in depths)
    max_conf = max(float(np.nanmax(im.conf)) for im in result.images)
    maps = []
    for depth, im in zip(depths, result.images):
        grey = np.clip(depth / max_depth, 0.0, 1.0) if max_depth > 0 else np.zeros_like(depth)
        conf = im.conf / max_conf if max_conf > 0 else np.zeros_like(im.conf)
        maps.append((np.repeat(grey[..., None], 3, axis=-1), jet(conf)))
    return maps


def _image(name: str, rgb: np.ndarray, created: CreatedData | None) -> bpy.types.Image:
    """A packed Blender image of ``rgb`` ``(H, W, 3)`` float 0..1 (top row first)."""
    h, w = rgb.shape[:2]
    image = bpy.data.images.new(id_name(name), w, h, alpha=False)
    if created is not None:
        created.add(image)
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = rgb[::-1]  # Blender stores the bottom row first
    image.pixels.foreach_set(rgba.ravel())
    image.pack()  # generated images are lost on save unless packed
    return image


def build_map_images(
    result: SceneResult, created: CreatedData | None = None
) -> list[tuple[bpy.types.Image, bpy.types.Image]]:
    """Blender images ``(<photo> depth, <photo> confidence)`` for each photo of ``result``."""
    images = []
    for im, (depth_rgb, conf_rgb) in zip(result.images, map_colors(result)):
        images.append(
            (
                _image(f"{im.name} depth", depth_rgb, created),
                _image(f"{im.name} confidence", conf_rgb, created),
            )
        )
    return images

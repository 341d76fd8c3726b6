"""From panel settings to the builders: import a result, or rebuild its geometry.

Shared by the reconstruct and re-import operators so that both build the same objects from the
same settings. The builders remove whatever they created when they fail.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bpy

from ..core.progress import Progress
from ..core.result import SceneResult
from .builders import ImportOptions, import_result, rebuild_geometry

log = logging.getLogger(__name__)


def paths_in_use() -> list[str]:
    """Result folders the scenes remember and files of loaded images (e.g. upright photo copies):
    the job and result folders holding them must survive pruning, or Re-import and backgrounds
    break."""
    results = [scene.recon.last_result_dir for scene in bpy.data.scenes if scene.recon.last_result_dir]
    images = [bpy.path.abspath(image.filepath) for image in bpy.data.images if image.filepath]
    return results + images


def import_options(props) -> ImportOptions:
    """Builder options from the scene settings (None = the backend's suggested threshold)."""
    return ImportOptions(
        output=props.output,
        conf_threshold=None if props.auto_threshold else props.conf_threshold,
        mask_sky=props.sky_mask,
    )


def _log_progress(stage: str, fraction: float, message: str) -> None:
    log.info("%s: %s", stage, message)


def apply_result(context: bpy.types.Context, result: SceneResult, result_dir: str | Path,
                 directory: str) -> bpy.types.Collection:
    """Build ``result`` as a new collection ``Recon <photo folder>`` and remember its source
    (``scene.recon.last_result_dir``/``last_collection``) for re-import and the map images."""
    props = context.scene.recon
    name = f"Recon {Path(bpy.path.abspath(directory)).resolve().name}"
    collection = import_result(result, import_options(props), name, context.scene,
                               Progress(_log_progress))
    props.last_result_dir = str(result_dir)
    props.last_collection = collection.name
    return collection


def reapply_result(context: bpy.types.Context, result: SceneResult) -> bpy.types.Collection:
    """Rebuild the points/meshes of the last imported collection (cameras stay); import anew if
    the user deleted it."""
    props = context.scene.recon
    collection = bpy.data.collections.get(props.last_collection)
    if collection is None:
        return apply_result(context, result, props.last_result_dir,
                            str(Path(result.images[0].file).parent) if result.images else "")
    rebuild_geometry(collection, result, import_options(props), Progress(_log_progress))
    return collection

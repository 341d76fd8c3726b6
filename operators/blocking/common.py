"""What the blocking operators share: the last result and its collection, and moving both.

The last reconstruction is ``scene.recon.last_result_dir`` (its cached result folder) and
``scene.recon.last_collection`` (the objects built from it). Blender's world is the result's
world: the builders put points and cameras in at identity.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import bpy
import numpy as np

from ...core.blocking.transform import similarity_scale
from ...core.errors import InputError
from ...core.job import remove_oldest
from ...core.result import RESULT_FILE, SceneResult
from ..apply import import_options, paths_in_use, reapply_result
from . import sync

log = logging.getLogger(__name__)

EDITED_SUFFIX = "-edit"
KEPT_EDITS = 5
"""Edited result folders kept beside a result (for undo); each holds a full copy of the result
(tens of MB), so older ones go, except those a scene still uses."""


def has_result(context: bpy.types.Context) -> bool:
    """Whether the scene remembers a reconstruction result."""
    recon = getattr(context.scene, "recon", None)
    return bool(recon is not None and recon.last_result_dir)


def poll_has_result(operator: type[bpy.types.Operator], context: bpy.types.Context) -> bool:
    """The poll of operators that work on the last result: says why not (scripts get the
    message in their RuntimeError, the UI in the button's tooltip)."""
    if has_result(context):
        return True
    operator.poll_message_set("No reconstruction in this scene yet: press Reconstruct first")
    return False


def last_result(context: bpy.types.Context) -> SceneResult:
    """The scene's last result, read from its folder.

    Raises:
        FormatError: the folder is missing or unreadable.
    """
    return SceneResult.load(context.scene.recon.last_result_dir)


def conf_threshold(context: bpy.types.Context) -> float | None:
    """The panel's confidence threshold, or None for the result's suggested one."""
    props = context.scene.recon
    return None if props.auto_threshold else props.conf_threshold


def reconstruction_collection(context: bpy.types.Context) -> bpy.types.Collection | None:
    """The collection built from the last result, or None if the user removed it."""
    return bpy.data.collections.get(context.scene.recon.last_collection)


def result_and_collection(context: bpy.types.Context) -> tuple[SceneResult, bpy.types.Collection]:
    """The last result and the collection built from it.

    Raises:
        FormatError: the result folder is unreadable.
        InputError: the user removed the collection.
    """
    result = last_result(context)
    collection = reconstruction_collection(context)
    if collection is None:
        raise InputError("The reconstruction's collection is gone; press Re-import first.")
    return result, collection


def _edited_folder(result_dir: Path) -> Path:
    """A new folder beside ``result_dir``: ``<name>-edit<k>`` with the first free ``k`` (``<name>``
    without an earlier ``-edit<k>``, so repeated edits do not grow the name)."""
    root = re.sub(rf"{EDITED_SUFFIX}\d+$", "", result_dir.name)
    k = 1
    while (result_dir.parent / f"{root}{EDITED_SUFFIX}{k}").exists():
        k += 1
    return result_dir.parent / f"{root}{EDITED_SUFFIX}{k}"


def _remove_old_edits(newest: Path) -> None:
    """Keep the :data:`KEPT_EDITS` newest edits of ``newest``'s result (by save time) and any the
    open .blend uses; the original result folder always stays."""
    root = re.sub(rf"{EDITED_SUFFIX}\d+$", "", newest.name)
    edits = [p for p in newest.parent.glob(f"{root}{EDITED_SUFFIX}*")
             if re.fullmatch(rf"{re.escape(root)}{EDITED_SUFFIX}\d+", p.name)]
    remove_oldest(edits, RESULT_FILE, KEPT_EDITS, protect=paths_in_use())


def commit_transform(
    context: bpy.types.Context, result: SceneResult, world_from_world: np.ndarray
) -> Path:
    """Make ``result`` (the last result moved by the similarity ``world_from_world``) the scene's
    result: saved as a new folder (the last :data:`KEPT_EDITS` stay, so undo and earlier files
    still find theirs), and the reconstruction's objects moved with it.

    Points and meshes are rebuilt from ``result`` with the panel's import settings; cameras,
    the animated camera and image planes are moved (see :mod:`.sync`). Other objects are not
    touched.

    Returns:
        the new result folder.
    """
    props = context.scene.recon
    folder = _edited_folder(Path(props.last_result_dir))
    result.save(folder)
    collection = reconstruction_collection(context)
    props.last_result_dir = str(folder)
    _remove_old_edits(folder)
    if collection is None:
        reapply_result(context, result)  # the user deleted the objects: build them anew
        return folder
    sync.update_collection(collection, result, similarity_scale(world_from_world),
                           import_options(props))
    log.info("Result moved and saved to %s", folder)
    return folder


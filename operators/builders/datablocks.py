"""Bookkeeping for the data-blocks one import creates, so a failure can remove them all."""

from __future__ import annotations

from pathlib import Path

import bpy

# Blender's ID names hold 63 bytes (UTF-8) before 5.0. Keep room for the ".001" Blender appends
# to a name that is taken, so two imports of the same photos stay recognisable.
_NAME_BYTES = 59


def id_name(text: str) -> str:
    """``text`` cut to a length every supported Blender keeps intact (UTF-8 safe)."""
    return text.encode("utf-8")[:_NAME_BYTES].decode("utf-8", errors="ignore")


class CreatedData:
    """Data-blocks created by one import, in creation order."""

    def __init__(self) -> None:
        self._ids: list[bpy.types.ID] = []

    def add(self, id_block):
        """Record ``id_block`` (any ``bpy.types.ID``) and return it."""
        self._ids.append(id_block)
        return id_block

    def remove_all(self) -> None:
        """Delete every recorded data-block that still exists (objects are unlinked first)."""
        alive = []
        for id_block in self._ids:
            try:
                id_block.name  # noqa: B018 - raises ReferenceError once Blender freed it
            except ReferenceError:
                continue
            alive.append(id_block)
        bpy.data.batch_remove(alive)
        self._ids.clear()


def node_material(name: str, created: CreatedData) -> bpy.types.Material:
    """A new material with an empty node tree (recorded in ``created``), in any Blender version.

    Blender 5.0 gives new materials a node tree and deprecates ``use_nodes``; earlier versions
    need ``use_nodes = True`` first.
    """
    material = created.add(bpy.data.materials.new(id_name(name)))
    if material.node_tree is None:
        material.use_nodes = True
    material.node_tree.nodes.clear()
    return material


def load_photo(path: str, created: CreatedData) -> tuple[bpy.types.Image | None, str | None]:
    """The photo at ``path`` as a Blender image, or ``(None, warning)`` if it cannot be read.

    An image already loaded from the same file is reused (only a new one is recorded in
    ``created``), so a camera's background and a mesh texture share one data-block.
    """
    if not Path(path).is_file():
        return None, f"Photo {path} not found."
    before = set(bpy.data.images)
    try:
        image = bpy.data.images.load(path, check_existing=True)
    except RuntimeError as exc:
        return None, f"Blender cannot read {path} ({exc})."
    if image not in before:
        created.add(image)
    return image, None

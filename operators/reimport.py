"""RECON_OT_reimport: rebuild the last result with new threshold/output/sky settings.

Reads the cached result folder of the last job; runs no network, alignment or worker.
"""

from __future__ import annotations

import bpy

from ..core.errors import ReconstructionError
from ..core.result import SceneResult
from .apply import reapply_result
from .blocking.common import poll_has_result


class RECON_OT_reimport(bpy.types.Operator):
    """Rebuild the last reconstruction's points and meshes with the current settings"""

    bl_idname = "recon.reimport"
    bl_label = "Re-import"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_has_result(cls, context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            result = SceneResult.load(context.scene.recon.last_result_dir)
            collection = reapply_result(context, result)
        except ReconstructionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Re-imported {len(result.images)} photos into {collection.name}")
        return {"FINISHED"}


CLASSES = (RECON_OT_reimport,)

"""RECON_OT_export_result: the last result as a COLMAP model, a PLY cloud or transforms.json."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from ...core.blocking.colmap import sideways_photos, write_colmap_model
from ...core.blocking.nerf import write_transforms_json
from ...core.blocking.ply import export_ply
from ...core.errors import ReconstructionError
from .common import conf_threshold, last_result, poll_has_result

PLY_NAME = "points.ply"
TRANSFORMS_NAME = "transforms.json"


class RECON_OT_export_result(bpy.types.Operator):
    """Write the last reconstruction for other tools (Gaussian splatting, NeRF, point clouds)"""

    bl_idname = "recon.export_result"
    bl_label = "Export Reconstruction"
    bl_options = {"REGISTER"}

    format: EnumProperty(
        name="Format",
        items=(
            ("COLMAP_BIN", "COLMAP (binary)", "cameras.bin, images.bin, points3D.bin in the folder"),
            ("COLMAP_TXT", "COLMAP (text)", "cameras.txt, images.txt, points3D.txt in the folder"),
            ("PLY", "PLY", f"{PLY_NAME}: points with colours and normals"),
            ("NERF", "transforms.json", f"{TRANSFORMS_NAME} (NeRF tools) and {PLY_NAME} beside it"),
        ),
        default="COLMAP_BIN",
    )
    directory: StringProperty(name="Folder", subtype="DIR_PATH")
    use_sparse: BoolProperty(
        name="Sparse Points",
        description="Write the tie points of the classical backend instead of the dense points",
        default=False,
    )
    filter_folder: BoolProperty(default=True, options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_has_result(cls, context)

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        folder = Path(bpy.path.abspath(self.directory))
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder to export into.")
            return {"CANCELLED"}
        threshold = conf_threshold(context)
        try:
            result = last_result(context)
            if self.format in ("COLMAP_BIN", "COLMAP_TXT"):
                write_colmap_model(result, folder, binary=self.format == "COLMAP_BIN",
                                   use_sparse=self.use_sparse, conf_threshold=threshold)
                written = folder
            elif self.format == "PLY":
                written = export_ply(result, folder / PLY_NAME, use_sparse=self.use_sparse,
                                     conf_threshold=threshold)
            else:
                export_ply(result, folder / PLY_NAME, use_sparse=self.use_sparse,
                           conf_threshold=threshold)
                written = write_transforms_json(result, folder / TRANSFORMS_NAME, PLY_NAME)
        except ReconstructionError as exc:
            self.report({"ERROR"}, f"Export failed: {exc}")
            return {"CANCELLED"}
        except OSError as exc:
            self.report({"ERROR"}, f"Export failed: cannot write {exc.filename or folder} "
                        f"({exc.strerror or exc}). Choose a folder you can write to.")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {len(result.images)} cameras to {written}")
        if self.format in ("COLMAP_BIN", "COLMAP_TXT") and sideways_photos(result):
            self.report({"WARNING"}, "Some photos are stored sideways (EXIF orientation): give "
                        "tools that ignore it their upright copies (see the log) under the same names")
        return {"FINISHED"}


CLASSES = (RECON_OT_export_result,)

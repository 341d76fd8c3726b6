"""RECON_OT_show_maps: a photo's depth or confidence map as a Blender image, to pick a threshold.

The images of all photos are made once per result (the builders' ``build_map_images``) and tagged
with the result folder, so a later reconstruction of photos with the same names never shows
stale maps; making them removes the maps of other results.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, IntProperty

from ..core.errors import ReconstructionError
from ..core.result import SceneResult
from .blocking.common import poll_has_result
from .builders import build_map_images

_KINDS = ("DEPTH", "CONFIDENCE")


def map_image(result_dir: str, index: int, kind: str) -> bpy.types.Image | None:
    """The map image made for photo ``index`` of ``result_dir``, if it exists."""
    tag = f"{index}:{kind}"
    for image in bpy.data.images:
        if image.get("recon_result") == result_dir and image.get("recon_map") == tag:
            return image
    return None


def make_map_images(result_dir: str) -> None:
    """Build and tag the depth and confidence images of every photo of ``result_dir``; the maps
    of earlier results (e.g. before Level Scene) go, so they neither pile up nor take the names."""
    result = SceneResult.load(result_dir)
    stale = [im for im in bpy.data.images
             if "recon_map" in im and im.get("recon_result") != result_dir]
    bpy.data.batch_remove(stale)
    for index, pair in enumerate(build_map_images(result)):
        for kind, image in zip(_KINDS, pair):
            image["recon_result"], image["recon_map"] = result_dir, f"{index}:{kind}"


class RECON_OT_show_maps(bpy.types.Operator):
    """Show this photo's depth or confidence map (depth: grey, near = dark; confidence: jet
    colours, blue = low, red = high)"""

    bl_idname = "recon.show_maps"
    bl_label = "Show Map"

    index: IntProperty(name="Photo", min=0)
    kind: EnumProperty(
        name="Map", items=(("DEPTH", "Depth", ""), ("CONFIDENCE", "Confidence", "")), default="DEPTH"
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_has_result(cls, context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        result_dir = context.scene.recon.last_result_dir
        try:
            if map_image(result_dir, self.index, self.kind) is None:
                make_map_images(result_dir)
        except ReconstructionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        image = map_image(result_dir, self.index, self.kind)
        if image is None:
            self.report({"ERROR"}, f"The last result has no photo number {self.index + 1}")
            return {"CANCELLED"}
        if not _show_in_image_editor(context, image):
            self.report({"INFO"}, f"Made image '{image.name}'; open an Image Editor to see it")
        return {"FINISHED"}


def _show_in_image_editor(context: bpy.types.Context, image: bpy.types.Image) -> bool:
    """Show ``image`` in the first Image Editor of the window; False when there is none."""
    screen = context.screen
    for area in screen.areas if screen is not None else ():
        if area.type == "IMAGE_EDITOR":
            area.spaces.active.image = image
            return True
    return False


CLASSES = (RECON_OT_show_maps,)

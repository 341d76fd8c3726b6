"""Image planes: each photo as a textured quad in its camera's frustum at a chosen depth.

A plane is a child of its camera at identity, so it follows the camera when the scene is levelled
or scaled (or when the user moves the camera); its vertices are in the camera's local axes.
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from ...core.blocking.planes import PLANE_UVS, image_plane_corners
from ...core.geometry.conventions import BLENDER_FROM_OPENCV_CAM
from ...core.result import ImageResult
from ..builders.datablocks import CreatedData, id_name, load_photo, node_material

ROLE = "image_plane"
# Corners of image_plane_corners (TL, TR, BR, BL) in the order that makes the face's normal
# point back at the camera (counter-clockwise as the camera sees it).
_FACE = (3, 2, 1, 0)


def _local_corners(image: ImageResult, depth: float) -> np.ndarray:
    """``(4, 3)`` float64 plane corners in the Blender camera's local axes."""
    return image_plane_corners(image.K_photo, image.photo_size, depth) @ BLENDER_FROM_OPENCV_CAM.T


def set_plane_depth(obj: bpy.types.Object, image: ImageResult, depth: float) -> None:
    """Move the plane ``obj`` of ``image`` to ``depth`` in front of its camera."""
    corners = _local_corners(image, depth)
    obj.data.vertices.foreach_set("co", corners.astype(np.float32).ravel())
    obj.data.update()
    obj["recon_depth"] = float(depth)


def _photo(camera: bpy.types.Object, image: ImageResult, created: CreatedData):
    """``(image, None)``: the camera's background photo, or the upright photo loaded from its
    file; ``(None, warning)`` if that cannot be read."""
    for background in camera.data.background_images:
        photo = background.image
        # A photo whose file has gone loads as 0 x 0: then load (and warn about) the file.
        if photo is not None and photo.source == "FILE" and photo.size[0] > 0:
            return photo, None
    return load_photo(image.upright_file, created)


def _plane_material(name: str, photo, opacity: float, created: CreatedData) -> bpy.types.Material:
    """Unlit photo texture mixed with transparency by ``opacity`` (grey without a photo)."""
    material = node_material(name, created)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    emission = nodes.new("ShaderNodeEmission")
    if photo is not None:
        texture = nodes.new("ShaderNodeTexImage")
        texture.image = photo
        texture.extension = "CLIP"
        texture.location = (-450, 100)
        links.new(texture.outputs["Color"], emission.inputs["Color"])
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    mix = nodes.new("ShaderNodeMixShader")
    mix.inputs["Fac"].default_value = opacity
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(transparent.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], output.inputs["Surface"])
    emission.location, transparent.location = (-200, 100), (-200, -100)
    mix.location, output.location = (0, 0), (200, 0)
    return material


def remove_image_planes(camera: bpy.types.Object) -> None:
    """Delete the image planes of ``camera`` with their meshes and materials."""
    planes = [c for c in camera.children if c.get("recon_role") == ROLE]
    meshes = [p.data for p in planes]
    materials = {m for mesh in meshes for m in mesh.materials if m is not None}
    bpy.data.batch_remove(planes)
    bpy.data.batch_remove([m for m in meshes if m.users == 0])
    bpy.data.batch_remove([m for m in materials if m.users == 0])


def build_image_plane(
    camera: bpy.types.Object,
    image: ImageResult,
    index: int,
    depth: float,
    opacity: float,
    collection: bpy.types.Collection,
) -> tuple[bpy.types.Object, str | None]:
    """The photo ``image`` as a quad at ``depth`` in front of ``camera`` (replacing an earlier
    one), linked into ``collection``.

    Returns:
        ``(plane object, warning or None)``; the warning says the photo could not be read.

    Raises:
        InputError: ``depth`` is not positive.
    """
    created = CreatedData()
    try:
        corners = _local_corners(image, depth)  # checks the depth before anything is made
        mesh = created.add(bpy.data.meshes.new(id_name(f"{image.name} plane")))
        mesh.from_pydata(corners.tolist(), [], [_FACE])
        uv = mesh.uv_layers.new(name="UVMap")
        uv.data.foreach_set("uv", PLANE_UVS[list(_FACE)].astype(np.float32).ravel())
        photo, warning = _photo(camera, image, created)
        mesh.materials.append(_plane_material(f"{image.name} plane", photo, opacity, created))
        obj = created.add(bpy.data.objects.new(mesh.name, mesh))
        obj["recon_role"] = ROLE
        obj["recon_index"] = index
        obj["recon_depth"] = float(depth)
        remove_image_planes(camera)
        collection.objects.link(obj)
        obj.parent = camera
        obj.matrix_parent_inverse = Matrix.Identity(4)
        obj.matrix_basis = Matrix.Identity(4)
    except BaseException:
        created.remove_all()
        raise
    if warning:
        warning += " Its plane is grey."
    return obj, warning

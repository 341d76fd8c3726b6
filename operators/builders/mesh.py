"""Coloured meshes from pointmaps: a grid triangulation of each image's pixels, in numpy."""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from ...core.result import ImageResult
from .datablocks import CreatedData, id_name, node_material
from .points import COLOR_ATTRIBUTE, set_point_attributes


def camera_z(cam2world: np.ndarray, pts3d_world: np.ndarray) -> np.ndarray:
    """z-depth in the camera (OpenCV axes) of world points ``(..., 3)``; float64, same shape[:-1]."""
    world2cam = np.linalg.inv(np.asarray(cam2world, np.float64))
    return np.asarray(pts3d_world, np.float64) @ world2cam[2, :3] + world2cam[2, 3]


def camera_depth(image: ImageResult) -> np.ndarray:
    """``(H, W)`` float32 z-depth of every map pixel in its camera (NaN where unknown).

    ``image.depth`` when the backend gave one, else computed from ``pts3d_world`` and the pose.
    """
    if image.depth is not None:
        return np.asarray(image.depth, np.float32)
    return camera_z(image.cam2world, image.pts3d_world).astype(np.float32)


def grid_triangles(valid: np.ndarray, depth: np.ndarray, max_depth_jump: float) -> np.ndarray:
    """Triangles over the pixel grid, two per 2x2 pixel quad, facing the camera.

    A triangle is kept when its three pixels are valid, in front of the camera, and their depths
    differ by at most ``max_depth_jump`` relative to the nearest of them (``(z_max - z_min) /
    z_min``): neighbouring pixels on either side of an occlusion edge are far apart in depth, so
    no skin is stretched between foreground and background.

    Args:
        valid: ``(H, W)`` bool pixels that may be used.
        depth: ``(H, W)`` float z-depth in the camera.
        max_depth_jump: relative depth range allowed inside one triangle.

    Returns:
        ``(T, 3)`` int64 indices into the row-major flattened ``H * W`` grid. The order (top-left,
        bottom-left, top-right) winds counter-clockwise as seen from the camera.
    """
    h, w = valid.shape
    index = np.arange(h * w).reshape(h, w)
    z = np.where(valid & (depth > 0), depth, np.nan)  # NaN fails every comparison below
    corners = [(index[:-1, :-1], z[:-1, :-1]), (index[:-1, 1:], z[:-1, 1:]),
               (index[1:, :-1], z[1:, :-1]), (index[1:, 1:], z[1:, 1:])]
    top_left, top_right, bottom_left, bottom_right = corners
    tris = []
    # Whole-grid elementwise min/max: much faster than reducing (T, 3) gathers along axis 1.
    for a, b, c in ((top_left, bottom_left, top_right), (top_right, bottom_left, bottom_right)):
        z_min = np.minimum(np.minimum(a[1], b[1]), c[1])
        z_max = np.maximum(np.maximum(a[1], b[1]), c[1])
        with np.errstate(invalid="ignore"):
            keep = z_max - z_min <= max_depth_jump * z_min
        tris.append(np.stack([a[0][keep], b[0][keep], c[0][keep]], axis=-1))
    return np.concatenate(tris)


@dataclass
class MeshArrays:
    """One triangulated pointmap, compacted to the vertices its triangles use.

    Attributes:
        pts3d: ``(V, 3)`` float32 world positions.
        colors: ``(V, 3)`` uint8 colours.
        uv: ``(V, 2)`` float32 texture coordinates of the photo (0..1, origin bottom-left).
        triangles: ``(T, 3)`` int64 vertex indices.
    """

    pts3d: np.ndarray
    colors: np.ndarray
    uv: np.ndarray
    triangles: np.ndarray


def image_mesh_arrays(image: ImageResult, valid: np.ndarray, max_depth_jump: float) -> MeshArrays:
    """Triangulate ``image``'s pointmap over its ``valid`` pixels (see :func:`grid_triangles`).

    UVs place each vertex on the photo pixel it came from (``photo_from_map``), so the original
    photo can texture the mesh.
    """
    h, w = valid.shape
    tris = grid_triangles(valid, camera_depth(image), max_depth_jump)
    is_used = np.zeros(h * w, bool)
    is_used[tris.ravel()] = True
    used = np.flatnonzero(is_used)  # sorted vertex ids without np.unique's sort
    remap = np.zeros(h * w, np.int64)
    remap[used] = np.arange(len(used))
    v, u = np.divmod(used, w)
    map_xy1 = np.stack([u, v, np.ones_like(u)], axis=0).astype(np.float64)
    photo_x, photo_y = (np.asarray(image.photo_from_map, np.float64) @ map_xy1)[:2]
    photo_w, photo_h = image.photo_size
    # Pixel centre (0, 0) is half a pixel from the photo's top-left corner; UV v grows upward.
    uv = np.stack([(photo_x + 0.5) / photo_w, 1.0 - (photo_y + 0.5) / photo_h], axis=1)
    return MeshArrays(
        pts3d=image.pts3d_world.reshape(-1, 3)[used],
        colors=image.colors.reshape(-1, 3)[used],
        uv=uv.astype(np.float32),
        triangles=remap[tris],
    )


def merge_mesh_arrays(parts: list[MeshArrays]) -> MeshArrays:
    """Concatenate meshes into one (no fusion: overlapping surfaces stay, as in the reference)."""
    offsets = np.cumsum([0] + [len(p.pts3d) for p in parts[:-1]])
    return MeshArrays(
        pts3d=np.concatenate([p.pts3d for p in parts]),
        colors=np.concatenate([p.colors for p in parts]),
        uv=np.concatenate([p.uv for p in parts]),
        triangles=np.concatenate([p.triangles + off for p, off in zip(parts, offsets)]),
    )


def photo_material(name: str, photo: bpy.types.Image, created: CreatedData) -> bpy.types.Material:
    """An unlit material showing ``photo`` through the ``UVMap`` of :func:`build_mesh`."""
    material = node_material(name, created)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = photo
    texture.interpolation = "Linear"
    texture.extension = "EXTEND"
    emission = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(texture.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    texture.location, emission.location, output.location = (-450, 0), (-150, 0), (100, 0)
    return material


def build_mesh(
    name: str,
    arrays: MeshArrays,
    materials: list[bpy.types.Material],
    collection: bpy.types.Collection,
    created: CreatedData,
    face_material: np.ndarray | None = None,
) -> bpy.types.Object:
    """A mesh object from ``arrays`` (at least one triangle) with a ``Col`` vertex colour and a
    ``UVMap`` of photo coordinates, linked into ``collection``.

    Args:
        materials: the mesh's material slots.
        face_material: ``(T,)`` int slot of each triangle, or None for slot 0 everywhere.
    """
    tris = arrays.triangles
    if len(tris) == 0:
        raise ValueError("build_mesh needs at least one triangle.")
    mesh = created.add(bpy.data.meshes.new(id_name(name)))
    mesh.vertices.add(len(arrays.pts3d))
    mesh.loops.add(3 * len(tris))
    mesh.polygons.add(len(tris))
    set_point_attributes(mesh, arrays.pts3d, arrays.colors)
    # The corner -> vertex attribute takes the array as is; loops.foreach_set("vertex_index")
    # goes element by element (about 20x slower).
    mesh.attributes[".corner_vert"].data.foreach_set("value", tris.astype(np.int32).ravel())
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * len(tris), 3, dtype=np.int32))
    uv_layer = mesh.uv_layers.new(name="UVMap")
    uv_layer.uv.foreach_set("vector", arrays.uv[tris].ravel())
    mesh.update(calc_edges=True)
    mesh.color_attributes.active_color_name = COLOR_ATTRIBUTE
    for material in materials:
        mesh.materials.append(material)
    if face_material is not None:
        mesh.polygons.foreach_set("material_index", face_material.astype(np.int32))
    obj = created.add(bpy.data.objects.new(id_name(name), mesh))
    obj["recon_role"] = "mesh"
    collection.objects.link(obj)
    return obj

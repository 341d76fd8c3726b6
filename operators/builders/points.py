"""The coloured point cloud: a vertex-only mesh shown as points by Geometry Nodes, or a native
point cloud object, both built in bulk with ``foreach_set``."""

from __future__ import annotations

import logging

import bpy
import numpy as np

from .datablocks import CreatedData, id_name, node_material

log = logging.getLogger(__name__)

COLOR_ATTRIBUTE = "Col"
"""Point-domain FLOAT_COLOR attribute with the photo colour (read by :func:`color_material`)."""
CONFIDENCE_ATTRIBUTE = "confidence"
"""Point-domain FLOAT attribute with the backend's confidence of each point."""
RADIUS_INPUT = "Radius"
"""Name of the points node group's radius input (a modifier input in scene units)."""


def _srgb_to_linear_table() -> np.ndarray:
    """``(256,)`` float32: linear value of each 8-bit sRGB code (the sRGB transfer function)."""
    c = np.arange(256, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


_SRGB_TO_LINEAR = _srgb_to_linear_table()


def set_point_attributes(
    mesh: bpy.types.Mesh, pts3d: np.ndarray, colors: np.ndarray, conf: np.ndarray | None = None
) -> None:
    """Fill the positions, colours and (optionally) confidence of a mesh's vertices in bulk.

    Colours are stored as linear floats (FLOAT_COLOR): Blender copies those as they are, while a
    BYTE_COLOR attribute converts every value one by one (about 80x slower for 2M points).

    Args:
        mesh: a mesh with ``len(pts3d)`` vertices.
        pts3d: ``(N, 3)`` float world positions.
        colors: ``(N, 3)`` uint8 sRGB colours.
        conf: ``(N,)`` float confidence, or None for no confidence attribute.
    """
    attributes = mesh.attributes
    attributes["position"].data.foreach_set("vector", np.ascontiguousarray(pts3d, np.float32).ravel())
    rgba = np.empty((len(colors), 4), np.float32)
    rgba[:, :3] = _SRGB_TO_LINEAR[colors]
    rgba[:, 3] = 1.0
    color_attr = attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    color_attr.data.foreach_set("color", rgba.ravel())
    if conf is not None:
        conf_attr = attributes.new(CONFIDENCE_ATTRIBUTE, "FLOAT", "POINT")
        conf_attr.data.foreach_set("value", np.ascontiguousarray(conf, np.float32))


def color_material(name: str, created: CreatedData) -> bpy.types.Material:
    """An unlit material showing the ``Col`` attribute (emission of strength 1).

    Unlit, like the reference's GLB export: a render through a recovered camera reproduces the
    photo colours with the Standard view transform, whatever the lighting.
    """
    material = node_material(name, created)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    attribute = nodes.new("ShaderNodeAttribute")
    attribute.attribute_type = "GEOMETRY"
    attribute.attribute_name = COLOR_ATTRIBUTE
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(attribute.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    attribute.location, emission.location, output.location = (-400, 0), (-150, 0), (100, 0)
    return material


def points_node_group(
    name: str, material: bpy.types.Material, created: CreatedData
) -> bpy.types.NodeTree:
    """Geometry Nodes: Mesh to Points (radius from the group's ``Radius`` input) -> Set Material."""
    group = created.add(bpy.data.node_groups.new(id_name(name), "GeometryNodeTree"))
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    radius = group.interface.new_socket(RADIUS_INPUT, in_out="INPUT", socket_type="NodeSocketFloat")
    radius.min_value = 0.0
    radius.default_value = 0.01
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    group_in = nodes.new("NodeGroupInput")
    to_points = nodes.new("GeometryNodeMeshToPoints")
    set_material = nodes.new("GeometryNodeSetMaterial")
    set_material.inputs["Material"].default_value = material
    group_out = nodes.new("NodeGroupOutput")
    links.new(group_in.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(group_in.outputs[RADIUS_INPUT], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_material.inputs["Geometry"])
    links.new(set_material.outputs["Geometry"], group_out.inputs["Geometry"])
    for k, node in enumerate((group_in, to_points, set_material, group_out)):
        node.location = (250 * k - 400, 0)
    return group


def _input_identifier(group: bpy.types.NodeTree, name: str) -> str:
    """The modifier key (``Socket_N``) of the group input called ``name``."""
    for item in group.interface.items_tree:
        if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(f"Node group {group.name} has no input {name!r}.")


def set_point_radius(obj: bpy.types.Object, radius: float) -> None:
    """Change the display radius of a point cloud made by :func:`build_point_cloud`."""
    if obj.type == "POINTCLOUD":
        radii = np.full(len(obj.data.points), radius, np.float32)
        obj.data.attributes["radius"].data.foreach_set("value", radii)
    else:
        modifier = obj.modifiers["Points"]
        modifier[_input_identifier(modifier.node_group, RADIUS_INPUT)] = float(radius)
    obj.update_tag()


def native_pointcloud_supported() -> bool:
    """Whether this Blender can convert a mesh to a native point cloud object."""
    target = bpy.ops.object.convert.get_rna_type().properties["target"]
    return "POINTCLOUD" in target.enum_items.keys()


def build_point_cloud(
    name: str,
    pts3d: np.ndarray,
    colors: np.ndarray,
    conf: np.ndarray,
    radius: float,
    material: bpy.types.Material,
    collection: bpy.types.Collection,
    created: CreatedData,
    native: bool = False,
) -> bpy.types.Object:
    """A point cloud object with one point per row of ``pts3d``, linked into ``collection``.

    By default a vertex-only mesh with a Geometry Nodes modifier ("Points") turning vertices into
    points of an adjustable radius; with ``native`` a Blender point cloud object (converted from
    that mesh, with a ``radius`` attribute), or the former where Blender cannot convert it
    (check ``obj.type``). Attributes: ``Col`` (colour), ``confidence``.

    Args:
        pts3d: ``(N, 3)`` float world points, N >= 1 (an empty point cloud crashes Cycles 5.0).
        colors: ``(N, 3)`` uint8 sRGB colours.
        conf: ``(N,)`` float confidence.
        radius: point radius in scene units.
    """
    if len(pts3d) == 0:
        raise ValueError("build_point_cloud needs at least one point.")
    mesh = created.add(bpy.data.meshes.new(id_name(name)))
    mesh.vertices.add(len(pts3d))
    set_point_attributes(mesh, pts3d, colors, conf)
    mesh.color_attributes.active_color_name = COLOR_ATTRIBUTE  # solid view "Attribute" colour
    mesh.materials.append(material)
    mesh.update()
    obj = created.add(bpy.data.objects.new(id_name(name), mesh))
    obj["recon_role"] = "points"
    collection.objects.link(obj)
    if not (native and _convert_to_native(obj, created)):
        modifier = obj.modifiers.new("Points", "NODES")
        modifier.node_group = points_node_group(f"{name} points", material, created)
    set_point_radius(obj, radius)
    return obj


def _convert_to_native(obj: bpy.types.Object, created: CreatedData) -> bool:
    """Turn the vertex-only mesh of ``obj`` into point cloud data with a ``radius`` attribute.

    Python cannot add points to a ``PointCloud``; Blender's convert operator can. It needs the
    object in the context's view layer and object mode; where it cannot run, ``obj`` stays a
    mesh and False is returned.
    """
    mesh = obj.data
    context = {
        "active_object": obj,
        "object": obj,
        "selected_objects": [obj],
        "selected_editable_objects": [obj],
    }
    try:
        with bpy.context.temp_override(**context):
            bpy.ops.object.convert(target="POINTCLOUD")
    except RuntimeError as exc:  # the operator's poll failed (e.g. another scene, edit mode)
        log.info("Native point cloud conversion of %s not possible: %s", obj.name, exc)
        return False
    if obj.data is mesh or obj.type != "POINTCLOUD":
        return False
    cloud = created.add(obj.data)
    if mesh.users == 0:
        bpy.data.meshes.remove(mesh)
    cloud.attributes.new("radius", "FLOAT", "POINT")
    return True

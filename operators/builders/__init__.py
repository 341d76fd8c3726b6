"""Turn a :class:`~core.result.SceneResult` into Blender objects: cameras, points, meshes.

``import_result`` builds a new collection; ``rebuild_geometry`` replaces only its points/meshes
(a new confidence threshold or output type, from the cached result, without re-running the
backend); ``build_map_images`` makes the depth/confidence images used to choose a threshold.
Every builder works in bulk (numpy + ``foreach_set``) and a failure removes all it created.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import bpy
import numpy as np

from ...core.errors import InputError
from ...core.masks import limit_points, sky_mask, valid_mask
from ...core.progress import Progress
from ...core.result import SceneResult
from .cameras import apply_render_settings, build_cameras
from .datablocks import CreatedData, id_name, load_photo
from .maps import build_map_images
from .mesh import build_mesh, camera_z, image_mesh_arrays, merge_mesh_arrays, photo_material
from .points import build_point_cloud, color_material, native_pointcloud_supported

__all__ = ["ImportOptions", "build_map_images", "import_result", "rebuild_geometry"]

log = logging.getLogger(__name__)

OUTPUTS = ("POINTS", "MESH", "BOTH")
GEOMETRY_ROLES = ("points", "mesh", "sparse")


@dataclass(frozen=True)
class ImportOptions:
    """What :func:`import_result` builds.

    Attributes:
        output: ``"POINTS"``, ``"MESH"`` or ``"BOTH"``.
        conf_threshold: keep pixels with confidence above this; None uses the result's
            suggested ``conf_threshold``.
        point_radius: point radius in scene units; 0 picks one from the data (about the
            footprint of a map pixel at the median depth).
        max_points: at most this many points (a fixed-seed uniform sample); 0 for all.
        mask_sky: drop sky pixels found by the reference's colour heuristic (:func:`core.masks.sky_mask`).
        cameras: create the camera objects.
        background_images: show each photo behind its camera's view.
        native_pointcloud: a native point cloud object instead of a mesh with Geometry Nodes
            (falls back to the latter, with a warning, where Blender cannot convert).
        merge_meshes: one mesh for all photos instead of one per photo.
        mesh_texture: colour each photo's mesh with the photo itself (through its UVs) instead
            of the per-vertex colours; needs the photo files.
        max_depth_jump: largest relative depth range inside one mesh triangle
            (see :func:`.mesh.grid_triangles`).
        render_settings: set the scene camera, resolution and pixel aspect from the first camera.
        sparse_points: also import the backend's sparse (tie) points, if it has any, as a
            second point cloud.
    """

    output: str = "POINTS"
    conf_threshold: float | None = None
    point_radius: float = 0.0
    max_points: int = 0
    mask_sky: bool = False
    cameras: bool = True
    background_images: bool = True
    native_pointcloud: bool = False
    merge_meshes: bool = True
    mesh_texture: bool = False
    max_depth_jump: float = 0.05
    render_settings: bool = True
    sparse_points: bool = True

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise InputError(f"Import output {self.output!r} is not one of {', '.join(OUTPUTS)}.")
        if self.point_radius < 0 or self.max_points < 0 or self.max_depth_jump <= 0:
            raise InputError(
                "Import options: point_radius and max_points must be >= 0 and max_depth_jump > 0 "
                f"(got {self.point_radius}, {self.max_points}, {self.max_depth_jump})."
            )


def _pixel_masks(result: SceneResult, options: ImportOptions) -> list[np.ndarray]:
    """``(H, W)`` bool per image: the pixels that become geometry under ``options``."""
    threshold = result.conf_threshold if options.conf_threshold is None else options.conf_threshold
    return [
        valid_mask(im.pts3d_world, im.conf, threshold, sky_mask(im.colors) if options.mask_sky else None)
        for im in result.images
    ]


def _auto_radius(result: SceneResult, masks: list[np.ndarray]) -> float:
    """About one map pixel's footprint at the median depth (0.7 of it: neighbours overlap).

    The median is taken over every 8th pixel in both directions: a radius needs no more.
    """
    footprints = []
    for im, mask in zip(result.images, masks):
        depth = camera_z(im.cam2world, im.pts3d_world[::8, ::8][mask[::8, ::8]])
        depth = depth[depth > 0]
        if depth.size:
            footprints.append(float(np.median(depth)) / float(np.sqrt(im.K[0, 0] * im.K[1, 1])))
    return 0.7 * float(np.median(footprints)) if footprints else 0.01


def _limit(masks: list[np.ndarray], max_points: int) -> list[np.ndarray]:
    """``masks`` thinned to at most ``max_points`` selected pixels in all (see :func:`limit_points`)."""
    counts = [int(m.sum()) for m in masks]
    keep = limit_points(sum(counts), max_points)
    if keep is None:
        return masks
    thinned = []
    for mask, part in zip(masks, np.split(keep, np.cumsum(counts)[:-1])):
        mask = mask.copy()
        mask[mask] = part  # row-major order, as boolean indexing gathers
        thinned.append(mask)
    return thinned


def _build_geometry(
    result: SceneResult,
    options: ImportOptions,
    collection: bpy.types.Collection,
    created: CreatedData,
    progress: Progress,
) -> list[str]:
    """Points and/or meshes (and the sparse points) into ``collection``; returns warnings."""
    warnings: list[str] = []
    masks = _pixel_masks(result, options)
    material = color_material(f"{collection.name} colour", created)
    native = options.native_pointcloud
    if native and not native_pointcloud_supported():
        warnings.append("This Blender cannot make native point clouds; used a mesh instead.")
        native = False
    radius = options.point_radius or _auto_radius(result, masks)
    if not any(m.any() for m in masks):
        warnings.append(
            "No pixel is above the confidence threshold: no dense points or mesh were made. "
            "Lower the threshold and re-import."
        )
    elif options.output in ("POINTS", "BOTH"):
        progress("building objects", 0.1, "point cloud")
        point_masks = _limit(masks, options.max_points)
        pts3d = np.concatenate([im.pts3d_world[m] for im, m in zip(result.images, point_masks)])
        colors = np.concatenate([im.colors[m] for im, m in zip(result.images, point_masks)])
        conf = np.concatenate([im.conf[m] for im, m in zip(result.images, point_masks)])
        points = build_point_cloud(
            f"{collection.name} points", pts3d, colors, conf, radius, material, collection,
            created, native=native,
        )
        if native and points.type != "POINTCLOUD":
            warnings.append(
                "Blender could not convert the points to a native point cloud here (is the "
                "collection in the active scene, in object mode?); used a mesh instead."
            )
    if any(m.any() for m in masks) and options.output in ("MESH", "BOTH"):
        progress("building objects", 0.5, "mesh")
        meshed, mesh_warnings = _build_meshes(result, options, masks, material, collection, created)
        warnings += mesh_warnings
        if not meshed:
            warnings.append("No triangle survived the confidence and depth-jump tests: no mesh.")
    if options.sparse_points and result.sparse_points is not None and len(result.sparse_points):
        progress("building objects", 0.9, "sparse points")
        sparse = build_point_cloud(
            f"{collection.name} sparse points", result.sparse_points, _sparse_colors(result),
            np.ones(len(result.sparse_points), np.float32), radius, material, collection,
            created, native=native,
        )
        sparse["recon_role"] = "sparse"
    return warnings


def _build_meshes(result, options, masks, material, collection, created) -> tuple[int, list[str]]:
    """The grid meshes (one per photo, or merged), coloured by ``material`` or by their photos.

    Returns:
        how many photos gave triangles, and warnings (photos that could not texture their mesh).
    """
    parts = [image_mesh_arrays(im, m, options.max_depth_jump) for im, m in zip(result.images, masks)]
    kept = [(im, part) for im, part in zip(result.images, parts) if len(part.triangles)]
    warnings: list[str] = []
    materials = [material] * len(kept)
    if options.mesh_texture:
        for k, (im, _) in enumerate(kept):
            photo, warning = load_photo(im.upright_file, created)
            if photo is None:
                warnings.append(f"{warning} Its mesh shows the point colours instead.")
            else:
                materials[k] = photo_material(f"{im.name} photo", photo, created)
    if options.merge_meshes and kept:
        arrays = merge_mesh_arrays([part for _, part in kept])
        slots = list(dict.fromkeys(materials))  # distinct, in order
        face_material = np.repeat(
            [slots.index(m) for m in materials], [len(part.triangles) for _, part in kept]
        )
        build_mesh(f"{collection.name} mesh", arrays, slots, collection, created,
                   face_material if len(slots) > 1 else None)
    else:
        for (im, part), mat in zip(kept, materials):
            build_mesh(f"{im.name} mesh", part, [mat], collection, created)
    return len(kept), warnings


def _sparse_colors(result: SceneResult) -> np.ndarray:
    """``(M, 3)`` uint8 colours of the sparse points (light grey where the backend gave none)."""
    if result.sparse_colors is not None:
        return np.asarray(result.sparse_colors, np.uint8)
    return np.full((len(result.sparse_points), 3), 200, np.uint8)


def _finish(collection: bpy.types.Collection, warnings: list[str]) -> None:
    for warning in warnings:
        log.warning(warning)
    collection["recon_warnings"] = "\n".join(warnings)


def import_result(
    result: SceneResult,
    options: ImportOptions = ImportOptions(),
    collection_name: str = "Reconstruction",
    scene: bpy.types.Scene | None = None,
    progress: Progress | None = None,
) -> bpy.types.Collection:
    """Build ``result`` as a new collection in ``scene`` (default: the context's scene).

    The collection holds the cameras (one per photo, named after it), a point cloud and/or
    meshes. Warnings for the user (e.g. mixed photo sizes, nothing above the threshold) are
    logged and kept, newline-separated, in ``collection["recon_warnings"]``.

    On any exception everything created so far is removed and the scene's render settings are
    untouched; the exception propagates.

    Raises:
        InputError: the result has no registered image.
    """
    if not result.images:
        raise InputError("The reconstruction has no registered photo: nothing to import.")
    scene = scene or bpy.context.scene
    progress = progress or Progress()
    created = CreatedData()
    try:
        collection = created.add(bpy.data.collections.new(id_name(collection_name)))
        scene.collection.children.link(collection)
        collection["recon_role"] = "reconstruction"
        warnings = list(result.warnings)
        cameras = []
        if options.cameras:
            progress("building objects", 0.0, "cameras")
            cameras, camera_warnings = build_cameras(
                result, collection, created, options.background_images
            )
            warnings += camera_warnings
        warnings += _build_geometry(result, options, collection, created, progress)
        if options.render_settings and cameras:
            render_warning = apply_render_settings(scene, cameras)
            if render_warning:
                warnings.append(render_warning)
        progress("building objects", 1.0, "done")
    except BaseException:
        created.remove_all()
        raise
    _finish(collection, warnings)
    return collection


def rebuild_geometry(
    collection: bpy.types.Collection,
    result: SceneResult,
    options: ImportOptions,
    progress: Progress | None = None,
) -> list[bpy.types.Object]:
    """Replace the points/meshes of an imported ``collection`` with ones built under ``options``
    (cameras stay). The old geometry is removed only once the new one is complete.

    Returns:
        the new geometry objects.
    """
    progress = progress or Progress()
    old = [o for o in collection.objects if o.get("recon_role") in GEOMETRY_ROLES]
    created = CreatedData()
    try:
        warnings = _build_geometry(result, options, collection, created, progress)
    except BaseException:
        created.remove_all()
        raise
    _remove_objects(old)
    _finish(collection, warnings)
    return [o for o in collection.objects if o.get("recon_role") in GEOMETRY_ROLES]


def _remove_objects(objects: list[bpy.types.Object]) -> None:
    """Delete ``objects`` with their data, materials and node groups once nothing else uses them."""
    data = [o.data for o in objects if o.data is not None]
    extras = {m for d in data for m in d.materials if m is not None}
    extras |= {mod.node_group for o in objects for mod in o.modifiers if mod.type == "NODES"}
    bpy.data.batch_remove(objects)
    bpy.data.batch_remove([d for d in data if d.users == 0])
    bpy.data.batch_remove([e for e in extras if e is not None and e.users == 0])

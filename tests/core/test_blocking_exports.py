"""Exports read back by independent readers: pycolmap for COLMAP models, a minimal numpy PLY
parser, and plain JSON for transforms.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from core.blocking.colmap import write_colmap_model
from core.blocking.nerf import write_transforms_json
from core.blocking.ply import export_ply, write_ply
from core.blocking.points import pointmap_normals
from core.errors import InputError
from core.result import ImageResult, SceneResult

GRID_H, GRID_W = 24, 32
PLANE_NORMAL = np.array([0.0, 0.0, 1.0])  # image 0 sees the plane z = 0


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _camera_rays(K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` world directions of the pixel rays (z = 1 in the camera)."""
    u, v = np.meshgrid(np.arange(GRID_W, dtype=float), np.arange(GRID_H, dtype=float))
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    return pix @ np.linalg.inv(K).T @ c2w[:3, :3].T


def make_scene(tmp_path: Path, n_images: int = 3, seed: int = 0) -> SceneResult:
    """Cameras with fx != fy, off-centre principal points, non-square photo scaling and crops;
    image 0 looks down at the plane z = 0, the others see random depths."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n_images):
        K = np.array([[40.0 + 5 * k, 0, 15.2 + k], [0, 43.0, 11.7], [0, 0, 1]])
        photo_from_map = np.array([[4.02, 0, 1.51 + 3 * k], [0, 3.97, 20.25], [0, 0, 1]])
        c2w = np.eye(4)
        if k == 0:
            c2w[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking straight down, slightly rolled
            c2w[:3, :3] = c2w[:3, :3] @ _small_roll(0.3)
            c2w[:3, 3] = [0.2, -0.1, 2.0]
            rays = _camera_rays(K, c2w)
            depth = -c2w[2, 3] / rays[..., 2]  # z-depth where the ray meets z = 0
        else:
            c2w[:3, :3] = _rotation(rng)
            c2w[:3, 3] = rng.normal(0, 2, 3)
            rays = _camera_rays(K, c2w)
            depth = rng.uniform(1.0, 5.0, (GRID_H, GRID_W))
        pts = c2w[:3, 3] + rays * depth[..., None]
        conf = rng.uniform(0.0, 2.0, (GRID_H, GRID_W)).astype(np.float32)
        pts[0, :3] = np.nan  # unknown points: never exported
        images.append(
            ImageResult(
                file=str(tmp_path / "photos" / f"frame_{k:03d}.jpg"),
                photo_size=(130 + k, 110),
                K=K,
                cam2world=c2w,
                photo_from_map=photo_from_map,
                pts3d_world=pts.astype(np.float32),
                conf=conf,
                colors=rng.integers(0, 256, (GRID_H, GRID_W, 3), dtype=np.uint8),
                depth=depth.astype(np.float32),
            )
        )
    sparse = rng.normal(size=(57, 3)).astype(np.float32)
    return SceneResult(
        images=images,
        backend="synthetic",
        conf_kind="synthetic",
        conf_threshold=0.5,
        sparse_points=sparse,
        sparse_colors=rng.integers(0, 256, (57, 3), dtype=np.uint8),
    )


def _small_roll(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _expected_points(result: SceneResult) -> tuple[np.ndarray, np.ndarray]:
    """Confident finite points and colours, recomputed here from the definition."""
    xyz, rgb = [], []
    for im in result.images:
        keep = (im.conf > result.conf_threshold) & np.isfinite(im.pts3d_world).all(-1)
        xyz.append(im.pts3d_world[keep])
        rgb.append(im.colors[keep])
    return np.concatenate(xyz), np.concatenate(rgb)


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_model_reads_back_in_pycolmap(tmp_path: Path, binary: bool):
    result = make_scene(tmp_path)
    model_dir = write_colmap_model(result, tmp_path / "sparse" / "0", binary=binary, max_points=0)
    assert {p.name for p in model_dir.iterdir()} == {
        f"{n}.{'bin' if binary else 'txt'}" for n in ("cameras", "images", "points3D")
    }
    rec = pycolmap.Reconstruction(str(model_dir))
    assert rec.num_cameras() == rec.num_images() == len(result.images)

    by_name = {img.name: img for img in rec.images.values()}
    for im in result.images:
        img = by_name[Path(im.file).name]
        camera = rec.cameras[img.camera_id]
        assert camera.model == pycolmap.CameraModelId.PINHOLE
        assert (camera.width, camera.height) == im.photo_size
        # Pose: COLMAP's cam_from_world is the inverse of our cam2world (same OpenCV axes).
        np.testing.assert_allclose(
            img.cam_from_world().matrix(), np.linalg.inv(im.cam2world)[:3], atol=1e-9
        )
        # Intrinsics and pixel convention, checked through COLMAP's own projection: a world
        # point lands at our photo pixel + 0.5 (COLMAP's top-left pixel centre is (0.5, 0.5)).
        world = im.cam2world[:3, 3] + im.cam2world[:3, :3] @ [0.3, -0.2, 2.0]
        cam = np.linalg.inv(im.cam2world)[:3] @ np.append(world, 1.0)
        ours = (im.photo_from_map @ im.K @ (cam / cam[2]))[:2]
        np.testing.assert_allclose(img.project_point(world), ours + 0.5, atol=1e-9)
        fx, fy = camera.focal_length_x, camera.focal_length_y
        np.testing.assert_allclose([fx, fy], np.diag(im.K_photo)[:2], rtol=1e-12)

    xyz, rgb = _expected_points(result)
    assert rec.num_points3D() == len(xyz)
    got_xyz = np.array([p.xyz for p in rec.points3D.values()])
    got_rgb = np.array([p.color for p in rec.points3D.values()])
    got = np.concatenate([got_xyz, got_rgb], axis=1)
    expected = np.concatenate([xyz.astype(np.float64), rgb], axis=1)
    np.testing.assert_allclose(_sorted_rows(got), _sorted_rows(expected), rtol=1e-7, atol=1e-7)


def test_colmap_text_and_binary_agree_with_sparse_points(tmp_path: Path):
    result = make_scene(tmp_path)
    recs = [
        pycolmap.Reconstruction(
            str(write_colmap_model(result, tmp_path / kind, binary=kind == "bin", use_sparse=True))
        )
        for kind in ("bin", "txt")
    ]
    for rec in recs:
        got = np.array([p.xyz for p in rec.points3D.values()])
        np.testing.assert_allclose(
            _sorted_rows(got), _sorted_rows(result.sparse_points.astype(np.float64)), atol=1e-7
        )
    for image_id, img in recs[0].images.items():
        other = recs[1].images[image_id]
        assert other.name == img.name
        np.testing.assert_allclose(
            other.cam_from_world().matrix(), img.cam_from_world().matrix(), atol=1e-12
        )
        np.testing.assert_allclose(
            recs[1].cameras[other.camera_id].params, recs[0].cameras[img.camera_id].params
        )


def test_colmap_export_names_the_upright_copies_of_sideways_photos(tmp_path: Path, caplog):
    result = make_scene(tmp_path)
    copy = tmp_path / "result" / "upright" / "2" / "view.jpg"
    result.images[2].display_file = str(copy)
    write_colmap_model(result, tmp_path / "model")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "1 photo(s) are stored sideways" in warning
    assert f"{Path(result.images[2].file).name} ({copy})" in warning


def test_colmap_subsamples_and_refuses_duplicate_names(tmp_path: Path):
    result = make_scene(tmp_path)
    rec = pycolmap.Reconstruction(str(write_colmap_model(result, tmp_path / "a", max_points=100)))
    assert rec.num_points3D() == 100
    result.images[1].file = str(tmp_path / "other" / Path(result.images[0].file).name)
    with pytest.raises(InputError, match="frame_000.jpg"):
        write_colmap_model(result, tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing half-written


def read_ply(path: Path) -> np.ndarray:
    """Minimal binary little-endian PLY vertex reader (independent of the writer)."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    types = {"float": "<f4", "uchar": "u1", "double": "<f8"}
    properties = [line.split() for line in header if line.startswith("property")]
    fields = [(name, types[kind]) for _, kind, name in properties]
    dtype = np.dtype(fields)
    assert len(data) - end == count * dtype.itemsize
    return np.frombuffer(data, dtype=dtype, offset=end, count=count)


def test_ply_round_trip(tmp_path: Path):
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(100, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (100, 3), dtype=np.uint8)
    normals = rng.normal(size=(100, 3)).astype(np.float32)
    normals[5] = np.nan
    for with_normals in (False, True):
        path = tmp_path / f"normals_{with_normals}.ply"
        write_ply(path, xyz, rgb, normals if with_normals else None)
        vertices = read_ply(path)
        np.testing.assert_array_equal(np.stack([vertices[c] for c in "xyz"], -1), xyz)
        got_rgb = np.stack([vertices[c] for c in ("red", "green", "blue")], -1)
        np.testing.assert_array_equal(got_rgb, rgb)
        if with_normals:
            got = np.stack([vertices[c] for c in ("nx", "ny", "nz")], -1)
            np.testing.assert_array_equal(got, np.nan_to_num(normals, nan=0.0))
        else:
            assert "nx" not in vertices.dtype.names
    with pytest.raises(InputError, match="normals"):
        write_ply(tmp_path / "bad.ply", xyz, rgb, normals[:3])


def test_normals_at_the_edges_of_holes_use_one_sided_differences():
    """A tilted plane seen through 30% random holes (dense stereo leaves many): every known pixel
    with a known neighbour along each grid axis gets the plane's normal, facing the camera;
    only pixels without one stay unknown (central differences alone lost about a third)."""
    rng = np.random.default_rng(5)
    normal = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])
    u, v = np.meshgrid(np.arange(GRID_W, dtype=float), np.arange(GRID_H, dtype=float))
    x, y = 0.1 * u, 0.1 * v
    pts = np.stack([x, y, -(normal[0] * x + normal[1] * y) / normal[2]], -1)
    pts[rng.random((GRID_H, GRID_W)) < 0.3] = np.nan
    normals = pointmap_normals(pts, np.array([1.0, 1.0, 10.0]))

    known = np.isfinite(pts).all(-1)
    padded = np.pad(known, 1)
    neighbour_v = padded[:-2, 1:-1] | padded[2:, 1:-1]
    neighbour_u = padded[1:-1, :-2] | padded[1:-1, 2:]
    expected_known = known & neighbour_v & neighbour_u
    np.testing.assert_array_equal(np.isfinite(normals).all(-1), expected_known)
    got = normals[expected_known]
    np.testing.assert_allclose(got, np.broadcast_to(normal, got.shape), atol=1e-6)


def test_export_ply_points_and_plane_normals(tmp_path: Path):
    result = make_scene(tmp_path)
    vertices = read_ply(export_ply(result, tmp_path / "cloud.ply"))
    xyz, rgb = _expected_points(result)
    got = np.stack([vertices[c] for c in ("x", "y", "z", "red", "green", "blue")], -1)
    expected = np.concatenate([xyz, rgb], 1)
    np.testing.assert_array_equal(
        _sorted_rows(got.astype(np.float64)), _sorted_rows(expected.astype(np.float64))
    )
    # Image 0 sees the plane z = 0 from above: its normals are +Z (facing the camera), except
    # next to the unknown first row.
    im = result.images[0]
    keep = (im.conf > result.conf_threshold) & np.isfinite(im.pts3d_world).all(-1)
    keep[:2] = False
    plane_points = {tuple(p) for p in im.pts3d_world[keep].tolist()}
    written = np.stack([vertices[c] for c in "xyz"], -1).tolist()
    rows = [k for k, p in enumerate(written) if tuple(p) in plane_points]
    normals = np.stack([vertices[c] for c in ("nx", "ny", "nz")], -1)[rows]
    assert len(rows) == keep.sum()
    np.testing.assert_allclose(normals, np.broadcast_to(PLANE_NORMAL, normals.shape), atol=1e-5)
    # Sparse export.
    sparse = read_ply(export_ply(result, tmp_path / "sparse.ply", use_sparse=True))
    assert len(sparse) == len(result.sparse_points)
    result.sparse_points = None
    with pytest.raises(InputError, match="no sparse points"):
        export_ply(result, tmp_path / "none.ply", use_sparse=True)


def test_transforms_json_maps_back_to_cam2world(tmp_path: Path):
    result = make_scene(tmp_path)
    # A photo stored sideways: the frame must name its upright copy, which K_photo describes.
    result.images[1].display_file = str(tmp_path / "result" / "upright" / "1" / "view.jpg")
    path = write_transforms_json(
        result, tmp_path / "export" / "transforms.json", ply_file="cloud.ply"
    )
    content = json.loads(path.read_text())
    assert content["ply_file_path"] == "cloud.ply"
    assert len(content["frames"]) == len(result.images)
    opengl_from_opencv = np.diag([1.0, -1.0, -1.0, 1.0])
    for frame, im in zip(content["frames"], result.images):
        shown = im.display_file or im.file
        assert (path.parent / frame["file_path"]).resolve() == Path(shown).resolve()
        np.testing.assert_allclose(
            np.array(frame["transform_matrix"]) @ opengl_from_opencv, im.cam2world, atol=1e-12
        )
        # Projection the NeRF way (OpenGL camera, corner-origin pixels) gives our pixel + 0.5.
        world = im.cam2world[:3, :3] @ [0.4, 0.1, 3.0] + im.cam2world[:3, 3]
        cam_gl = np.linalg.inv(np.array(frame["transform_matrix"])) @ np.append(world, 1.0)
        u = frame["fl_x"] * cam_gl[0] / -cam_gl[2] + frame["cx"]
        v = frame["fl_y"] * -cam_gl[1] / -cam_gl[2] + frame["cy"]
        cam = np.linalg.inv(im.cam2world) @ np.append(world, 1.0)
        ours = im.K_photo @ (cam[:3] / cam[2])
        np.testing.assert_allclose([u, v], ours[:2] + 0.5, atol=1e-9)
        assert (frame["w"], frame["h"]) == im.photo_size
        assert np.tan(frame["camera_angle_x"] / 2) * 2 * frame["fl_x"] == pytest.approx(frame["w"])
    assert content["fl_x"] == content["frames"][0]["fl_x"]

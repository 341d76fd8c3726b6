"""The animated camera's keys (sign-continuous quaternions, poses equal to the photos' cameras),
the photos as an image sequence, and image-plane corners in the camera frustum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core.blocking.animation import (
    camera_path,
    continuous_quaternions,
    image_sequence,
    make_links,
    photo_order,
    shared_intrinsics,
)
from core.blocking.planes import image_plane_corners
from core.errors import InputError
from core.result import ImageResult, SceneResult
from core.synthetic import look_at_cam2world

FLIP = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> Blender camera axes


def _orbit_result(n: int, K_photo_per_image=None, files=None) -> SceneResult:
    """Cameras turning one full circle around a centre: the quaternions of the poses pass
    through a half turn, so their signs as computed per frame jump somewhere along the path."""
    images = []
    for k in range(n):
        angle = 2 * np.pi * k / n
        centre = np.array([3 * np.cos(angle), 3 * np.sin(angle), 1.0])
        c2w = look_at_cam2world(centre, np.zeros(3))
        K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
        if K_photo_per_image is not None:
            K = K_photo_per_image[k]
        images.append(ImageResult(
            file=files[k] if files else f"/photos/frame_{k:03d}.jpg",
            photo_size=(32, 24),
            K=K,
            cam2world=c2w,
            photo_from_map=np.eye(3),
            pts3d_world=np.zeros((24, 32, 3), np.float32),
            conf=np.ones((24, 32), np.float32),
            colors=np.zeros((24, 32, 3), np.uint8),
        ))
    return SceneResult(images=images, backend="synthetic")


def test_quaternions_keep_their_rotation_and_never_flip_between_neighbours():
    rng = np.random.default_rng(0)
    # A smooth path of rotations (steps below 30 degrees) with random signs per frame.
    steps = Rotation.from_rotvec(rng.normal(0, 0.2, (60, 3)))
    rotations = [Rotation.identity()]
    for step in steps:
        rotations.append(step * rotations[-1])
    xyzw = np.array([r.as_quat() for r in rotations])
    signed = xyzw * rng.choice([-1.0, 1.0], size=(len(xyzw), 1))
    out = continuous_quaternions(signed)
    # Same rotation (q or -q) at every frame.
    assert np.allclose(np.abs(np.einsum("kc,kc->k", out, xyzw)), 1.0)
    # Neighbours on the same side: the dot product is cos(half the angle between them) > 0.
    dots = np.einsum("kc,kc->k", out[1:], out[:-1])
    angles = np.array([(b * a.inv()).magnitude() for a, b in zip(rotations[:-1], rotations[1:])])
    assert np.allclose(dots, np.cos(angles / 2), atol=1e-12)
    assert (signed[1:] * signed[:-1]).sum(axis=1).min() < 0  # the input did flip


def test_camera_path_poses_equal_the_photos_blender_cameras():
    result = _orbit_result(12)
    order = list(range(12))[::-1]
    keys = camera_path(result, order, frame_start=5)
    assert [key.frame for key in keys] == list(range(5, 17))
    assert [key.image_index for key in keys] == order
    for key in keys:
        expected = result.images[key.image_index].cam2world @ FLIP
        assert np.allclose(key.matrix_world, expected, atol=1e-12)
        assert np.isclose(np.linalg.norm(key.quaternion), 1.0)
    quats = np.array([key.quaternion for key in keys])
    assert (np.einsum("kc,kc->k", quats[1:], quats[:-1]) > 0).all()


@pytest.mark.parametrize("order", [[], [0, 0], [0, 5]])
def test_camera_path_refuses_bad_orders(order):
    with pytest.raises(InputError, match="distinct photos among the 3"):
        camera_path(_orbit_result(3), order)


def test_photo_order_compares_numbers_by_value():
    files = ["/v/f10.png", "/v/f2.png", "/v/F1.png", "/v/f2b.png"]
    assert photo_order(files) == [2, 1, 3, 0]
    assert photo_order(files, by_name=False) == [0, 1, 2, 3]


def test_shared_intrinsics():
    assert shared_intrinsics(_orbit_result(4), [0, 1, 2, 3])
    Ks = [np.array([[50.0 + k, 0, 15.5], [0, 50.0 + k, 11.5], [0, 0, 1]]) for k in range(4)]
    varying = _orbit_result(4, K_photo_per_image=Ks)
    assert not shared_intrinsics(varying, [0, 1, 2, 3])
    assert shared_intrinsics(varying, [2])


def test_numbered_photos_are_used_in_place(tmp_path):
    files = [str(tmp_path / f"shot_{k:04d}.jpg") for k in range(7, 11)]
    sequence = image_sequence(files, tmp_path / "links")
    assert sequence.first_file == files[0] and sequence.frame_offset == 6
    assert sequence.links == []


@pytest.mark.parametrize("names", [
    ["a_0001.jpg", "a_0003.jpg"],  # a gap (every other video frame)
    ["a_0002.jpg", "a_0001.jpg"],  # not increasing
    ["a_9.jpg", "a_10.jpg"],  # padding changes
    ["a_0001.jpg", "b_0002.jpg"],  # another prefix
    ["a_0001.jpg", "a_0002.png"],  # another extension
    ["left.jpg", "right.jpg"],  # no numbers
])
def test_other_photos_become_a_folder_of_links(tmp_path, names):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = []
    for k, name in enumerate(names):
        (folder / name).write_bytes(bytes([k]) * 10)
        files.append(str(folder / name))
    sequence = image_sequence(files, tmp_path / "seq")
    suffix = Path(names[0]).suffix
    expected = [str(tmp_path / "seq" / f"frame_{k:06d}{suffix}") for k in (1, 2)]
    assert [link for _, link in sequence.links] == expected
    assert sequence.first_file == expected[0] and sequence.frame_offset == 0
    make_links(sequence)
    make_links(sequence)  # again: old links are replaced
    for k, link in enumerate(expected):
        assert Path(link).read_bytes() == bytes([k]) * 10


def test_links_to_a_missing_photo_are_refused(tmp_path):
    sequence = image_sequence([str(tmp_path / "gone.jpg")], tmp_path / "seq")
    with pytest.raises(InputError, match="gone.jpg not found"):
        make_links(sequence)


def test_image_plane_corners_project_to_the_photo_corners():
    K = np.array([[61.0, 0, 20.3], [0, 55.0, 13.9], [0, 0, 1]])
    corners = image_plane_corners(K, (40, 30), 2.5)
    assert np.allclose(corners[:, 2], 2.5)
    pixels = corners @ K.T
    pixels = pixels[:, :2] / pixels[:, 2:]
    assert np.allclose(pixels, [[-0.5, -0.5], [39.5, -0.5], [39.5, 29.5], [-0.5, 29.5]])
    with pytest.raises(InputError, match="positive distance"):
        image_plane_corners(K, (40, 30), 0.0)

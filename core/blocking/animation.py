"""One animated camera through the poses of ordered photos (video frames), and the photos as an
image sequence behind it.

Blender interpolates the four channels of a quaternion key independently, and ``q`` and ``-q`` are
the same rotation: if neighbouring keys differ in sign the camera spins the long way round
between them. So each frame's quaternion takes the sign nearer to its predecessor's.

When all photos share their intrinsics and size (one video camera), the lens is set once;
otherwise the camera settings are keyed per frame. numpy/scipy only, no bpy.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..geometry.conventions import cam2world_opencv_to_blender
from ..result import SceneResult

_DIGITS = re.compile(r"(\d+)")
_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class CameraKey:
    """The animated camera at one frame.

    Attributes:
        frame: scene frame number.
        image_index: index of the photo in ``result.images``.
        location: ``(3,)`` float64 camera centre in the world.
        quaternion: ``(4,)`` float64 unit ``(w, x, y, z)`` rotation of the Blender camera's
            ``matrix_world`` (camera looks down its -z, y up), sign-continuous along the path.
    """

    frame: int
    image_index: int
    location: np.ndarray
    quaternion: np.ndarray

    @property
    def matrix_world(self) -> np.ndarray:
        """``(4, 4)`` float64 Blender camera ``matrix_world`` of this key."""
        w, x, y, z = self.quaternion
        matrix = np.eye(4)
        matrix[:3, :3] = Rotation.from_quat([x, y, z, w]).as_matrix()
        matrix[:3, 3] = self.location
        return matrix


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value (``f2`` before ``f10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def photo_order(files: list[str], by_name: bool = True) -> list[int]:
    """Indices of ``files`` in frame order: by file name with numbers compared by value, or as given."""
    indices = list(range(len(files)))
    if by_name:
        indices.sort(key=lambda k: natural_key(Path(files[k]).name))
    return indices


def continuous_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """``(N, 4)`` float64 copy of ``quaternions`` where each one has the sign nearer its predecessor.

    Args:
        quaternions: ``(N, 4)`` unit quaternions (any component order).
    """
    q = np.array(quaternions, np.float64)
    for k in range(1, len(q)):
        if q[k] @ q[k - 1] < 0:
            q[k] = -q[k]
    return q


def shared_intrinsics(result: SceneResult, indices: list[int], rtol: float = 1e-6) -> bool:
    """Whether the photos ``indices`` share their photo size and intrinsics ``K_photo``.

    Then one set of camera settings (lens, shift, resolution) fits every frame.
    """
    first = result.images[indices[0]]
    return all(
        tuple(result.images[k].photo_size) == tuple(first.photo_size)
        and np.allclose(result.images[k].K_photo, first.K_photo, rtol=rtol, atol=0.0)
        for k in indices[1:]
    )


def camera_path(result: SceneResult, order: list[int], frame_start: int = 1) -> list[CameraKey]:
    """One key per photo, on consecutive frames from ``frame_start``, in ``order``.

    Args:
        result: the scene.
        order: photo indices in frame order (e.g. from :func:`photo_order`).
        frame_start: frame of the first photo.

    Raises:
        InputError: ``order`` is empty, repeats a photo or names one that does not exist.
    """
    n = len(result.images)
    if not order or len(set(order)) != len(order) or not all(0 <= k < n for k in order):
        raise InputError(
            f"An animated camera needs an order of distinct photos among the {n} of the scene."
        )
    matrices = [cam2world_opencv_to_blender(result.images[k].cam2world) for k in order]
    xyzw = Rotation.from_matrix(np.array([m[:3, :3] for m in matrices])).as_quat()
    wxyz = continuous_quaternions(xyzw[:, [3, 0, 1, 2]])
    return [
        CameraKey(frame_start + i, k, matrices[i][:3, 3].copy(), wxyz[i])
        for i, k in enumerate(order)
    ]


@dataclass(frozen=True)
class ImageSequence:
    """The photos as an image sequence Blender can play behind a camera.

    Attributes:
        first_file: the file to load as a ``SEQUENCE`` image (the first frame).
        frame_offset: number in the first frame's file name minus 1 (Blender's ``frame_offset``).
        links: ``(photo, link path)`` pairs to create first, when the photos themselves are not
            consecutively numbered files of one folder; empty otherwise.
    """

    first_file: str
    frame_offset: int
    links: list[tuple[str, str]]


def _numbered(path: Path) -> tuple[str, str, int] | None:
    """``(prefix, digits, number)`` of a stem ending in digits, else None."""
    match = _TRAILING_NUMBER.match(path.stem)
    if match is None:
        return None
    return match.group(1), match.group(2), int(match.group(2))


def image_sequence(files: list[str], link_dir: str | Path) -> ImageSequence:
    """How to show ``files`` (in frame order) as one image sequence.

    Blender finds the frames of a sequence by replacing the last number in the first file's name
    with the frame number (same folder, same zero padding). Photos that already are such a run
    (``frame_0007.jpg``, ``frame_0008.jpg``, ...) are used in place; otherwise the sequence is a
    folder ``link_dir`` of links (or copies) ``frame_000001<ext>``, ... to them.
    """
    paths = [Path(f) for f in files]
    parsed = [_numbered(p) for p in paths]
    first = parsed[0]
    in_place = first is not None and all(
        p is not None
        and path.parent == paths[0].parent
        and path.suffix == paths[0].suffix
        and p[0] == first[0]
        and len(p[1]) == len(first[1])
        and p[2] == first[2] + i
        for i, (path, p) in enumerate(zip(paths, parsed))
    )
    if in_place:
        return ImageSequence(str(paths[0]), first[2] - 1, [])
    suffix = paths[0].suffix.lower()
    links = [(str(p), str(Path(link_dir) / f"frame_{i + 1:06d}{suffix}")) for i, p in enumerate(paths)]
    return ImageSequence(links[0][1], 0, links)


def make_links(sequence: ImageSequence) -> None:
    """Create the links of ``sequence`` (replacing old ones); copies where links are not allowed.

    Raises:
        InputError: a photo is missing.
    """
    for source, link in sequence.links:
        if not Path(source).is_file():
            raise InputError(f"Photo {source} not found: the image sequence cannot be made.")
        Path(link).parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(link):
            os.remove(link)
        try:
            os.symlink(os.path.abspath(source), link)
        except OSError:  # e.g. Windows without the symlink privilege
            shutil.copyfile(source, link)

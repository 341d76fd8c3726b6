"""Global alignment on inputs that contradict themselves (found with random small checkpoints):
known poses placed contrary to the estimate, focal estimates that are not positive, per-photo
option lists of the wrong length. The result must stay finite and valid, or the job must fail
with a message naming the problem."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import synthetic_pairs
from core.align import AlignOptions, align
from core.align.focal import focal_base
from core.align.init import _centre_scale
from core.align.model import SceneState
from core.align.options import check_photo_lists
from core.align.pipeline import _check_cameras
from core.config import JobConfig
from core.errors import InputError, ReconstructionFailed
from core.pairs import make_pairs
from core.progress import Progress
from core.worker import validate_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(n=4, seed=30, **kw):
    return synthetic_pairs.make_scene(n, make_pairs(n, "complete"), seed=seed, **kw)


def _mirrored_poses(cam2world: np.ndarray) -> np.ndarray:
    """The same orientations with the camera centres reflected through their mean: no
    similarity maps the true centres onto these with a positive scale."""
    poses = cam2world.copy()
    centres = cam2world[:, :3, 3]
    poses[:, :3, 3] = 2 * centres.mean(0) - centres
    return poses


def _assert_finite(result) -> None:
    for im in result.images:
        assert np.isfinite(im.K).all() and im.K[0, 0] > 0 and im.K[1, 1] > 0
        assert np.isfinite(im.cam2world).all()
        assert np.isfinite(im.depth).any() and np.isfinite(im.pts3d_world).any()


def test_centre_scale_is_positive_and_unchanged_when_consistent():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3))
    # Consistent centres: the signed least-squares scale, exactly.
    s, contradicts = _centre_scale(a, 2.5 * a + [1.0, -2.0, 0.5])
    assert s == pytest.approx(2.5, rel=1e-12) and not contradicts
    # Mirrored (scale -2.5): the spreads' ratio 2.5 instead of a negative scale.
    s, contradicts = _centre_scale(a, -2.5 * a + [1.0, -2.0, 0.5])
    assert s == pytest.approx(2.5, rel=1e-12) and contradicts
    # Centres at one place fix no scale.
    assert _centre_scale(a, np.zeros((5, 3))) == (None, False)
    assert _centre_scale(np.ones((5, 3)), a) == (None, False)


@pytest.mark.parametrize("known", [(0, 1), (0, 1, 2), (0, 1, 2, 3)])
def test_known_poses_that_contradict_the_estimate_give_a_finite_result(known):
    scene = _scene()
    poses = _mirrored_poses(scene.cam2world)
    given = [poses[k] if k in known else None for k in range(4)]
    result = align(scene.preds, AlignOptions(known_poses=given, iterations=20))
    _assert_finite(result)
    for k in known:
        np.testing.assert_array_equal(result.images[k].cam2world, poses[k])
    assert any("contrary to the known poses" in w for w in result.warnings), result.warnings
    assert result.units == "given poses"


def test_consistent_known_poses_give_no_warning():
    scene = _scene()
    result = align(scene.preds, AlignOptions(known_poses=list(scene.cam2world[:3]) + [None],
                                             iterations=20))
    assert not any("known poses" in w for w in result.warnings)


def test_known_poses_at_one_place_pin_the_scale_instead():
    # Photos from a tripod: the known centres coincide and fix no scale (before: a zero scale,
    # log(0) in the optimisation).
    scene = _scene()
    poses = scene.cam2world.copy()
    poses[:, :3, 3] = poses[0, :3, 3]
    result = align(scene.preds, AlignOptions(known_poses=list(poses), iterations=20))
    _assert_finite(result)
    for k in range(4):
        np.testing.assert_array_equal(result.images[k].cam2world, poses[k])
    assert result.units == "arbitrary"


def test_focal_base_is_a_sixty_degree_field_of_view():
    # tan(30 deg) = 1 / sqrt(3): f = (max side / 2) * sqrt(3).
    assert focal_base(384, 512) == pytest.approx(256 * np.sqrt(3), rel=1e-12)
    assert focal_base(512, 288) == pytest.approx(256 * np.sqrt(3), rel=1e-12)


def _flip_own_pointmaps(preds, image: int) -> None:
    """Turn image ``image``'s camera frame by 180 degrees about its axis in every edge where it
    is the first image: its own pointmap then gives a negative focal estimate."""
    for e, (i, _) in enumerate(preds.edges):
        if i == image:
            for pts in (preds.pts3d_i[e], preds.pts3d_j[e]):
                pts[..., :2] *= -1


def test_negative_focal_estimate_starts_from_the_reference_default():
    scene = _scene()
    baseline = align(scene.preds, AlignOptions(iterations=0))
    _flip_own_pointmaps(scene.preds, 0)
    result = align(scene.preds, AlignOptions(iterations=0))
    h, w = scene.preds.views[0].shape
    assert result.images[0].K[0, 0] == pytest.approx(np.sqrt(3) * max(h, w) / 2, rel=1e-12)
    assert result.images[0].K[1, 1] == result.images[0].K[0, 0]
    # Positive estimates are kept exactly as they were.
    for k in (1, 2, 3):
        np.testing.assert_array_equal(result.images[k].K, baseline.images[k].K)
    assert [w for w in result.warnings if "focal length" in w] == [
        next(w for w in result.warnings if "synthetic_000.png" in w)]
    assert not any("focal length" in w for w in baseline.warnings)


def test_negative_focal_estimate_is_optimised_to_a_valid_camera():
    scene = _scene()
    _flip_own_pointmaps(scene.preds, 0)
    result = align(scene.preds, AlignOptions(iterations=30))
    _assert_finite(result)
    assert any("synthetic_000.png" in w and "focal length" in w for w in result.warnings)


def _state(n=2) -> SceneState:
    return SceneState(
        cam_R=np.tile(np.eye(3), (n, 1, 1)), cam_c=np.zeros((n, 3)), focal=np.full((n, 2), 50.0),
        pp=np.full((n, 2), 16.0), edge_R=np.eye(3)[None], edge_t=np.zeros((1, 3)),
        edge_s=np.ones(1))


@pytest.mark.parametrize("focal", [-50.0, 0.0, np.nan, np.inf])
def test_invalid_final_focal_is_never_saved(focal):
    files = ["a.jpg", "b.jpg"]
    _check_cameras(_state(), files)  # valid cameras pass
    state = _state()
    state.focal[1, 1] = focal
    with pytest.raises(ReconstructionFailed, match="b.jpg.*invalid focal length"):
        _check_cameras(state, files)


def test_non_finite_pose_is_never_saved():
    state = _state()
    state.cam_c[0, 2] = np.nan
    with pytest.raises(ReconstructionFailed, match="a.jpg.*non-finite pose"):
        _check_cameras(state, ["a.jpg", "b.jpg"])


@pytest.mark.parametrize("name,entry", [("known_focals", 300.0),
                                        ("known_intrinsics", np.diag([300.0, 300.0, 1.0])),
                                        ("known_poses", np.eye(4))])
@pytest.mark.parametrize("count", [2, 5])
def test_per_photo_lists_of_the_wrong_length_are_refused(name, entry, count):
    scene = _scene()
    options = AlignOptions(**{name: (entry,) + (None,) * (count - 1)})
    with pytest.raises(InputError, match=f"{name} has {count} entries for 4 photos"):
        align(scene.preds, options)
    with pytest.raises(InputError, match=f"{name} has {count} entries for 4 photos"):
        check_photo_lists(options.to_dict(), 4)
    if count < 4:
        with pytest.raises(InputError, match=f"{name} has {count} entries, none for photo 4"):
            options.for_images([0, 1, 3])
    check_photo_lists(dataclasses.replace(options, **{name: None}).to_dict(), 4)


def test_per_photo_lists_follow_the_input_photos():
    options = AlignOptions(known_focals=(100.0, None, 300.0, 400.0))
    assert options.for_images([0, 2, 3]).known_focals == (100.0, 300.0, 400.0)


def test_known_intrinsics_need_positive_focals():
    bad = np.diag([-300.0, 300.0, 1.0])
    with pytest.raises(InputError, match=r"known_intrinsics\[1\] must have positive focal"):
        AlignOptions(known_intrinsics=(None, bad))


def _photos(folder, n_photos, unreadable):
    """``n_photos`` PNG files ``p<k>.png`` in ``folder``; those in ``unreadable`` are not images."""
    folder.mkdir()
    files = []
    for k in range(n_photos):
        path = folder / f"p{k}.png"
        if k in unreadable:
            path.write_bytes(b"not a png")
        else:
            Image.fromarray(np.full((24, 32, 3), 40 * k, np.uint8)).save(path)
        files.append(str(path))
    return files


def _validated(images, options):
    job, _ = validate_images(JobConfig(images=tuple(images), backend="dust3r", options=options),
                             Progress(lambda *args: None))
    return job


def test_skipped_photos_drop_their_entries_of_per_photo_lists(tmp_path):
    files = _photos(tmp_path / "photos", 4, unreadable={1})
    poses = [np.eye(4).tolist()] * 4
    options = {"known_focals": [100.0, 200.0, 300.0, None], "known_poses": poses, "graph": "swin"}
    job = _validated(files, options)
    assert job.images == (files[0], files[2], files[3])
    assert job.options == {"known_focals": [100.0, 300.0, None], "known_poses": poses[:3],
                           "graph": "swin"}
    # A folder stands for its photos in name order; other files are not photos.
    (tmp_path / "photos" / "notes.txt").write_text("not a photo")
    assert _validated([str(tmp_path / "photos")], options).options == job.options
    with pytest.raises(InputError, match="known_focals has 3 entries for 4 photos"):
        _validated(files, {"known_focals": [100.0, 200.0, 300.0]})


def test_alignment_options_load_without_torch():
    # The worker checks per-photo options before any backend runs, also without torch.
    code = "import sys, core.align.options; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], check=True)


def test_same_cameras_on_two_threads():
    # Gradients gathered over pixels must not be summed in a thread-dependent order.
    import torch

    scene = synthetic_pairs.make_scene(6, make_pairs(6, "complete"), 96, 128, seed=31)
    torch.set_num_threads(2)  # the one_torch_thread fixture restores the count afterwards
    first, again = (align(scene.preds, AlignOptions(iterations=30)) for _ in range(2))
    for a, b in zip(first.images, again.images):
        np.testing.assert_array_equal(a.cam2world, b.cam2world)
        np.testing.assert_array_equal(a.K, b.K)

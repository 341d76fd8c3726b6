"""core/metrics: camera errors are gauge-free and measure known perturbations exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core.errors import FormatError, InputError
from core.metrics import camera_errors, load_truth, pose_accuracy
from core.result import ImageResult, SceneResult


def _write_truth(path, cam2world, K, size=(64, 48)):
    frames = []
    for k, c2w in enumerate(cam2world):
        R_w2c = c2w[:3, :3].T
        frames.append({
            "file": f"images/img{k}.png", "width": size[0], "height": size[1],
            "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
            "R_w2c": R_w2c.tolist(), "t_w2c": (-R_w2c @ c2w[:3, 3]).tolist(),
        })
    path.write_text(json.dumps({"frames": frames}))


def _result(cam2world, K, size=(64, 48)):
    w, h = size
    images = [
        ImageResult(
            file=f"/photos/img{k}.png", photo_size=size, K=K, cam2world=c2w,
            photo_from_map=np.eye(3), pts3d_world=np.zeros((h, w, 3), np.float32),
            conf=np.ones((h, w), np.float32), colors=np.zeros((h, w, 3), np.uint8),
        )
        for k, c2w in enumerate(cam2world)
    ]
    return SceneResult(images=images, backend="synthetic")


@pytest.fixture()
def cameras():
    rng = np.random.default_rng(3)
    c2w = np.tile(np.eye(4), (5, 1, 1))
    c2w[:, :3, :3] = Rotation.random(5, random_state=4).as_matrix()
    c2w[:, :3, 3] = rng.normal(size=(5, 3))
    K = np.array([[80.0, 0, 31.5], [0, 82.0, 23.5], [0, 0, 1]])
    return c2w, K


def test_similarity_transformed_cameras_have_zero_error(tmp_path, cameras):
    c2w, K = cameras
    _write_truth(tmp_path / "gt.json", c2w, K)
    world = np.eye(4)
    world[:3, :3] = 2.7 * Rotation.from_rotvec([0.3, -1.1, 0.4]).as_matrix()
    world[:3, 3] = [5.0, -2.0, 1.0]
    est = world @ c2w
    est[:, :3, :3] /= 2.7  # keep the rotation part orthonormal; the centres are scaled
    errors = camera_errors(_result(est, K), load_truth(tmp_path / "gt.json"))
    assert len(errors.rotation_deg) == 10 and len(errors.files) == 5
    assert errors.rotation_deg.max() < 1e-5
    assert errors.translation_deg.max() < 1e-5
    assert errors.focal_rel.max() < 1e-12
    assert errors.missing == ()


def test_known_perturbations_are_measured(tmp_path, cameras):
    c2w, K = cameras
    _write_truth(tmp_path / "gt.json", c2w, K)
    est = c2w.copy()
    est[0, :3, :3] = est[0, :3, :3] @ Rotation.from_euler("y", 5.0, degrees=True).as_matrix()
    K_est = K.copy()
    K_est[0, 0] *= 1.03
    errors = camera_errors(_result(est[:4], K_est), load_truth(tmp_path / "gt.json"))
    pairs_with_0 = errors.rotation_deg[:3]  # pairs (0,1), (0,2), (0,3) come first
    np.testing.assert_allclose(pairs_with_0, 5.0, atol=1e-6)
    np.testing.assert_allclose(errors.rotation_deg[3:], 0.0, atol=1e-5)
    np.testing.assert_allclose(errors.focal_rel[:, 0], 0.03, atol=1e-12)
    np.testing.assert_allclose(errors.focal_rel[:, 1], 0.0, atol=1e-12)
    assert errors.missing == ("img4.png",)
    assert "cameras compared: 4" in errors.summary()


def test_bad_truth_files(tmp_path, cameras):
    c2w, K = cameras
    (tmp_path / "bad.json").write_text('{"frames": [{"file": "a.png"}]}')
    with pytest.raises(FormatError, match="bad.json"):
        load_truth(tmp_path / "bad.json")
    _write_truth(tmp_path / "gt.json", c2w, K)
    truth = load_truth(tmp_path / "gt.json")
    other = _result(c2w, K)
    for im in other.images:
        im.file = "/elsewhere/x.png"
    with pytest.raises(InputError, match="ground truth"):
        camera_errors(other, truth)


def test_pose_accuracy_counts_missing_photos_and_known_errors(tmp_path, cameras):
    c2w, K = cameras
    _write_truth(tmp_path / "gt.json", c2w, K)
    est = c2w.copy()
    # Turn camera 0 by 20 degrees about its own optical axis: its 4 pairs get a 20-degree
    # rotation error; camera 4 is left out of the result (4 more failed pairs of 10).
    est[0, :3, :3] = est[0, :3, :3] @ Rotation.from_rotvec([0, 0, np.radians(20)]).as_matrix()
    errors = camera_errors(_result(est[:4], K), load_truth(tmp_path / "gt.json"))
    scores = pose_accuracy(errors)
    assert errors.missing == ("img4.png",)
    assert scores["RRA@15"] == pytest.approx(3 / 10)  # pairs among cameras 1..3 only
    rot_ok = np.sort(errors.rotation_deg)
    np.testing.assert_allclose(rot_ok[-3:], 20.0, atol=1e-6)
    # mAA over registered pairs (6): the 3 exact pairs pass all 30 thresholds; a turn about the
    # optical axis moves translation directions by at most 20 degrees, so the 3 turned pairs'
    # worst error is the 20-degree rotation and they pass t = 21..30 (10 thresholds; t = 20 too
    # when rounding lands a hair below 20, hence one threshold of slack per pair).
    assert pose_accuracy(errors, registered_only=True)["mAA(30)"] == pytest.approx(
        (3 * 30 + 3 * 10) / (6 * 30), abs=3 / 180 + 1e-9)

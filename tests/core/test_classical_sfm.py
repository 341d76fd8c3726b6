"""Sparse SfM (pycolmap) and the classical backend: poses vs ground truth, pixel conventions,
bad input (textureless photos, bad options, too few photos) and cancellation."""

from __future__ import annotations

import json
import threading

import numpy as np
import pycolmap
import pytest
from PIL import Image

from core.classical.backend import ClassicalOptions, run
from core.classical.sfm import SfmOptions, _K_photo, run_sfm
from core.config import JobConfig
from core.errors import Cancelled, InputError, ReconstructionFailed
from core.progress import CancelToken, Progress
from core.result import SceneResult

DTU_SUBSET = slice(10, 15)  # five neighbouring robot-arm positions


def _dtu(shared_dir):
    scene = shared_dir / "scenes" / "dtu_scan65"
    frames = json.loads((scene / "gt.json").read_text())["frames"][DTU_SUBSET]
    return [str(scene / f["file"]) for f in frames], frames


def _rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def test_K_photo_follows_colmap_projection_and_pixel_centres():
    # A COLMAP camera on a half-size workspace copy (COLMAP pixel centres at +0.5).
    camera = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 300.0, 320, 240)
    camera.params = [300.0, 310.0, 161.0, 118.5]
    K = _K_photo(camera, (640, 480), (320, 240))
    point = np.array([0.2, -0.1, 2.0])
    u_colmap, v_colmap = camera.img_from_cam(point)
    # COLMAP work pixel -> our work pixel (-0.5) -> our photo pixel (s * (u + 0.5) - 0.5).
    expected = np.array([2 * u_colmap - 0.5, 2 * v_colmap - 0.5])
    projected = K @ point
    np.testing.assert_allclose(projected[:2] / projected[2], expected, atol=1e-9)


def test_sfm_on_dtu_subset_matches_ground_truth(shared_dir):
    paths, frames = _dtu(shared_dir)
    model = run_sfm(paths, SfmOptions(max_image_size=800), Progress())
    assert model.files == paths and not model.unregistered
    focal_error = [abs(K[0, 0] / f["fx"] - 1) for K, f in zip(model.K_photo, frames)]
    assert np.median(focal_error) < 0.03
    w2c_gt = []
    for f in frames:
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = f["R_w2c"], f["t_w2c"]
        w2c_gt.append(w2c)
    w2c_pred = [np.linalg.inv(c2w) for c2w in model.cam2world]
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            rel_gt = w2c_gt[j] @ np.linalg.inv(w2c_gt[i])
            rel_pred = w2c_pred[j] @ np.linalg.inv(w2c_pred[i])
            assert _rotation_angle_deg(rel_pred[:3, :3].T @ rel_gt[:3, :3]) < 2.0
            t_gt, t_pred = rel_gt[:3, 3], rel_pred[:3, 3]
            cos = abs(t_gt @ t_pred) / np.linalg.norm(t_gt) / np.linalg.norm(t_pred)
            assert np.degrees(np.arccos(min(cos, 1.0))) < 5.0
    # Sparse points project into the photos that observe them, in front of the camera.
    for k in range(len(paths)):
        w2c = w2c_pred[k]
        pts = model.points[model.visible[k]] @ w2c[:3, :3].T + w2c[:3, 3]
        assert len(pts) > 50 and np.all(pts[:, 2] > 0)
        uv = pts @ model.K_photo[k].T
        uv = uv[:, :2] / uv[:, 2:]
        assert np.all((uv > -1) & (uv < [frames[k]["width"], frames[k]["height"]]))


def _textureless(tmp_path, n=3):
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        grey = np.full((96, 128, 3), 128, np.int16) + rng.integers(-1, 2, (96, 128, 1))
        path = tmp_path / f"blank{k}.png"
        Image.fromarray(grey.astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_textureless_photos_fail_with_a_clear_message(tmp_path):
    with pytest.raises(ReconstructionFailed, match="features per photo") as info:
        run(JobConfig(images=tuple(_textureless(tmp_path))), Progress())
    assert "3 photos" in str(info.value) and "texture" in str(info.value)


def test_bad_options_and_too_few_photos(tmp_path):
    paths = _textureless(tmp_path, n=2)
    with pytest.raises(InputError, match="Unknown classical option"):
        ClassicalOptions.from_dict({"resolutoin": 320})
    with pytest.raises(InputError, match="should be a int"):
        ClassicalOptions.from_dict({"resolution": "320"})
    with pytest.raises(InputError, match="matcher"):
        ClassicalOptions.from_dict({"matcher": "vocab"})
    with pytest.raises(InputError, match="at least two photos"):
        run_sfm(paths[:1], SfmOptions(), Progress())
    with pytest.raises(InputError, match="not found"):
        run(JobConfig(images=(paths[0], str(tmp_path / "missing.jpg"))), Progress())


def _temple(shared_dir, indices):
    scene = shared_dir / "scenes" / "middlebury_templeSR"
    frames = json.loads((scene / "gt.json").read_text())["frames"]
    return [str(scene / frames[k]["file"]) for k in indices]


def test_photos_of_another_scene_are_left_out_with_the_reason(shared_dir):
    """Temple photos mixed into a DTU set: the DTU model is kept and each temple photo is named
    with why it is missing (a lone one overlaps nothing; three that match each other form a
    separate model that the user is told about)."""
    dtu, _frames = _dtu(shared_dir)
    lone = _temple(shared_dir, [0])
    model = run_sfm(dtu + lone, SfmOptions(max_image_size=800), Progress())
    assert model.files == dtu
    [missing] = model.unregistered
    assert missing["file"] == lone[0]
    assert "too few matches with the placed photos" in missing["reason"]
    assert "may not overlap" in missing["reason"]

    group = _temple(shared_dir, [0, 1, 8])
    model = run_sfm(dtu + group, SfmOptions(max_image_size=800), Progress())
    assert model.files == dtu
    assert [u["file"] for u in model.unregistered] == group
    assert all("separate group of 3 photos" in u["reason"] for u in model.unregistered)
    assert any("split into 2 separate models of 5, 3 photos" in w for w in model.warnings)


def test_cancel_between_stages(shared_dir):
    paths, _ = _dtu(shared_dir)
    token = CancelToken()
    stages = []

    def on_progress(stage, fraction, message):
        stages.append(stage)
        if stage == "matching":
            token.cancel()

    with pytest.raises(Cancelled):
        run(JobConfig(images=tuple(paths[:3])), Progress(on_progress, token))
    assert stages[-1] == "matching" and "mapping" not in stages and "dense" not in stages


@pytest.mark.slow
def test_backend_end_to_end_on_dtu_subset(shared_dir, tmp_path):
    paths, frames = _dtu(shared_dir)
    options = {"max_image_size": 800, "resolution": 160, "num_hypotheses": 48, "threads": 1}
    stages = []
    result = run(
        JobConfig(images=tuple(paths), options=options),
        Progress(lambda stage, fraction, message: stages.append(stage)),
    )
    assert [s for i, s in enumerate(stages) if s not in stages[:i]] == [
        "features", "matching", "mapping", "dense"
    ]
    assert result.backend == "classical" and result.conf_kind == "unit"
    assert [im.file for im in result.images] == paths and not result.unregistered
    for im, frame in zip(result.images, frames):
        assert im.size == (160, 120) and im.photo_size == (frame["width"], frame["height"])
        assert abs(im.K_photo[0, 0] / frame["fx"] - 1) < 0.03
        kept = im.mask(result.conf_threshold)
        assert 0.05 < kept.mean() and np.all((im.conf >= 0) & (im.conf <= 1))
        # The pointmap is the depth unprojected with the camera.
        v, u = np.nonzero(kept)
        pts_cam = (np.linalg.inv(im.K) @ np.stack([u, v, np.ones_like(u)])) * im.depth[kept]
        pts = (im.cam2world[:3, :3] @ pts_cam + im.cam2world[:3, 3:4]).T
        np.testing.assert_allclose(im.pts3d_world[kept], pts, rtol=1e-4, atol=1e-4)
    result.save(tmp_path / "result")
    loaded = SceneResult.load(tmp_path / "result")
    assert len(loaded.images) == len(paths) and loaded.sparse_points.shape[1] == 3


def test_exif_focal_from_35mm_equivalent(tmp_path):
    from core.images import exif_camera

    image = Image.new("RGB", (400, 300), (90, 90, 90))
    exif = Image.Exif()
    exif[271], exif[272] = "Maker", "Phone 1"
    exif.get_ifd(0x8769)[41989] = 28  # FocalLengthIn35mmFilm
    path = tmp_path / "exif.jpg"
    image.save(path, exif=exif)
    name, focal = exif_camera(path)
    # 28 mm on the 43.27 mm full-frame diagonal, scaled to the 500 px image diagonal.
    assert name == "Maker Phone 1"
    assert focal == pytest.approx(28 / np.hypot(36, 24) * 500)
    plain = tmp_path / "plain.png"
    image.save(plain)
    assert exif_camera(plain) == ("", None)


def test_cancel_during_feature_extraction(shared_dir):
    paths, _ = _dtu(shared_dir)
    token = CancelToken()
    messages = []

    def on_progress(stage, fraction, message):
        messages.append((stage, message))
        if message.startswith("SIFT features"):
            # Cancel while pycolmap is extracting (no progress call happens until it returns).
            threading.Timer(0.5, token.cancel).start()

    with pytest.raises(Cancelled):
        run(JobConfig(images=tuple(paths[:3])), Progress(on_progress, token))
    # No progress after the extraction started: pycolmap itself stopped.
    assert messages[-1][1].startswith("SIFT features")


def test_epipolar_agreement_flags_a_flipped_camera(shared_dir):
    from core.classical.sfm import epipolar_agreement

    _, frames = _dtu(shared_dir)
    K = np.stack([[[f["fx"], 0, f["cx"]], [0, f["fy"], f["cy"]], [0, 0, 1.0]] for f in frames])
    world2cam = np.stack([np.eye(4) for _ in frames])
    for w2c, f in zip(world2cam, frames):
        w2c[:3, :3], w2c[:3, 3] = f["R_w2c"], f["t_w2c"]
    # Points on the object (inside IDR's sphere), seen by every camera, projected with the GT
    # cameras plus 0.5 px noise: every match agrees with the GT poses.
    rng = np.random.default_rng(0)
    scene = json.loads((shared_dir / "scenes" / "dtu_scan65" / "gt.json").read_text())
    sphere = scene["object_sphere"]
    centre, radius = np.asarray(sphere["center"], float), float(sphere["radius"])
    pts = centre + rng.normal(size=(200, 3)) * radius / 4
    pix = []
    for k in range(len(frames)):
        cam = pts @ world2cam[k, :3, :3].T + world2cam[k, :3, 3]
        uv = cam @ K[k].T
        pix.append(uv[:, :2] / uv[:, 2:] + rng.normal(scale=0.5, size=(len(pts), 2)))
    pairs = {(i, j): (pix[i], pix[j]) for i in range(len(pix)) for j in range(i + 1, len(pix))}
    agree, total = epipolar_agreement(K, world2cam, pairs, 4.0)
    assert np.all(total == 200 * (len(frames) - 1)) and np.all(agree == total)
    # Camera 2 turned 180 degrees about its viewing direction's perpendicular (a flipped pose
    # through the same centre): it explains almost none of its matches; the others lose only
    # their share with camera 2.
    flipped = world2cam.copy()
    turn = np.diag([1.0, -1.0, -1.0])
    centre_2 = -world2cam[2, :3, :3].T @ world2cam[2, :3, 3]
    flipped[2, :3, :3] = turn @ world2cam[2, :3, :3]
    flipped[2, :3, 3] = -flipped[2, :3, :3] @ centre_2
    agree, total = epipolar_agreement(K, flipped, pairs, 4.0)
    share = agree / total
    assert share[2] < 0.1
    assert np.all(np.delete(share, 2) > 0.7)


def test_reregistration_recovers_a_left_out_pose_and_rejects_a_flipped_one(shared_dir, tmp_path):
    from core.classical.sfm import (
        _MIN_AGREEMENT,
        _pair_statistics,
        _Pose,
        _pose_agreement,
        _reregister,
    )

    paths, frames = _dtu(shared_dir)
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    names = []
    for k, path in enumerate(paths):
        Image.open(path).save(image_dir / f"{k:05d}.png")
        names.append(f"{k:05d}.png")
    database = tmp_path / "database.db"
    pycolmap.Database.open(str(database)).close()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_PINHOLE"
    pycolmap.import_images(database, image_dir, pycolmap.CameraMode.SINGLE, names, reader)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = 1
    pycolmap.extract_features(
        database, image_dir, names, pycolmap.CameraMode.SINGLE, reader, extraction,
        pycolmap.Device.cpu,
    )
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = 1
    pycolmap.match_exhaustive(
        database, matching, pycolmap.ExhaustivePairingOptions(), pycolmap.TwoViewGeometryOptions(),
        pycolmap.Device.cpu,
    )
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = 1
    models = pycolmap.incremental_mapping(database, image_dir, tmp_path / "sparse", mapping)
    rec = max(models.values(), key=lambda r: r.num_reg_images())
    assert rec.num_reg_images() == len(paths)
    matches = _pair_statistics(database, len(paths))
    poses = {}
    for image_id in rec.reg_image_ids():
        image = rec.image(image_id)
        w2c = np.eye(4)
        w2c[:3] = image.cam_from_world().matrix()
        seen = [p.point3D_id for p in image.points2D if p.has_point3D()]
        poses[int(image.name[:5])] = _Pose(image.camera, w2c, seen)
    # The mapper's poses explain nearly all verified matches.
    assert min(_pose_agreement(poses, matches).values()) > 0.9
    left_out = 2
    others = {k: p for k, p in poses.items() if k != left_out}
    pose = _reregister(left_out, rec, others, matches)
    assert pose is not None and len(pose.point_ids) >= 30
    # Same pose as the mapper's (which agrees with the GT within the DTU test's tolerance).
    R_err = pose.cam_from_world[:3, :3].T @ poses[left_out].cam_from_world[:3, :3]
    assert _rotation_angle_deg(R_err) < 0.5
    def centre(p):
        return -p.cam_from_world[:3, :3].T @ p.cam_from_world[:3, 3]

    spread = np.linalg.norm(np.ptp([centre(p) for p in poses.values()], axis=0))
    assert np.linalg.norm(centre(pose) - centre(poses[left_out])) < 0.02 * spread
    # A flipped pose of the same photo explains too few of its matches to be kept.
    flipped = _Pose(pose.camera, np.diag([1.0, -1.0, -1.0, 1.0]) @ pose.cam_from_world, [])
    assert _pose_agreement({**others, left_out: flipped}, matches)[left_out] < _MIN_AGREEMENT

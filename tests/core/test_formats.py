"""Round trips and refusals of the on-disk formats (result folder, pair-predictions cache)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import FormatError
from core.predictions import PairPredictions, ViewInfo
from core.result import ImageResult, SceneResult


def _image(rng, h=4, w=6, depth=True):
    return ImageResult(
        file=f"/photos/img_{w}x{h}.jpg",
        photo_size=(3 * w, 3 * h),
        K=np.array([[5.0, 0, 2.5], [0, 6.0, 1.5], [0, 0, 1]]),
        cam2world=np.eye(4),
        photo_from_map=np.diag([3.0, 3.0, 1.0]),
        pts3d_world=rng.normal(size=(h, w, 3)).astype(np.float32),
        conf=rng.uniform(1, 5, size=(h, w)).astype(np.float32),
        colors=rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8),
        depth=rng.uniform(1, 2, size=(h, w)).astype(np.float32) if depth else None,
    )


def test_result_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    scene = SceneResult(
        images=[_image(rng), _image(rng, 6, 4, depth=False)],
        backend="synthetic",
        conf_kind="dust3r",
        conf_threshold=3.0,
        sparse_points=rng.normal(size=(10, 3)).astype(np.float32),
        unregistered=[{"file": "x.jpg", "reason": "too few matches"}],
    )
    scene.save(tmp_path)
    back = SceneResult.load(tmp_path)
    assert back.backend == "synthetic" and back.conf_threshold == 3.0
    assert back.unregistered == scene.unregistered
    assert back.images[1].depth is None
    for a, b in zip(scene.images, back.images):
        np.testing.assert_array_equal(a.pts3d_world, b.pts3d_world)
        np.testing.assert_array_equal(a.colors, b.colors)
        np.testing.assert_array_equal(a.K_photo, b.K_photo)
    np.testing.assert_array_equal(back.sparse_points, scene.sparse_points)
    # K_photo = photo_from_map @ K: the focal scales with the map-to-photo factor.
    assert back.images[0].K_photo[0, 0] == 15.0


def test_result_of_another_version_is_refused(tmp_path):
    SceneResult(images=[_image(np.random.default_rng(1))], backend="synthetic").save(tmp_path)
    meta = json.loads((tmp_path / "result.json").read_text())
    meta["version"] = 99
    (tmp_path / "result.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="version 99"):
        SceneResult.load(tmp_path)


def test_a_result_folder_that_is_gone_says_what_to_do(tmp_path):
    with pytest.raises(FormatError, match=r"result .*job.* is gone .*reconstruct the photos again"):
        SceneResult.load(tmp_path / "job" / "result")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{not json")
    with pytest.raises(FormatError, match="Cannot read reconstruction result"):
        SceneResult.load(tmp_path / "broken")


def _predictions(rng):
    views = [
        ViewInfo(f"/p/{k}.png", (8, 6), np.eye(3), rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
        for k in range(3)
    ]
    edges = np.array([[0, 1], [1, 0], [2, 1]])

    def maps():
        return [rng.normal(size=(6, 8, 3)).astype(np.float32) for _ in edges]

    def confs():
        return [rng.uniform(1, 3, (6, 8)).astype(np.float32) for _ in edges]

    return PairPredictions(views, edges, maps(), confs(), maps(), confs(), model="test")


def test_predictions_round_trip(tmp_path):
    preds = _predictions(np.random.default_rng(2))
    preds.save(tmp_path / "pairs.npz")
    back = PairPredictions.load(tmp_path / "pairs.npz")
    np.testing.assert_array_equal(back.edges, preds.edges)
    for name in ("pts3d_i", "conf_i", "pts3d_j", "conf_j"):
        for a, b in zip(getattr(preds, name), getattr(back, name)):
            np.testing.assert_array_equal(a, b)
    assert [v.file for v in back.views] == [v.file for v in preds.views]


def test_predictions_refuse_mismatched_shapes():
    preds = _predictions(np.random.default_rng(3))
    with pytest.raises(FormatError, match="edge 0 side j"):
        PairPredictions(preds.views, preds.edges, preds.pts3d_i, preds.conf_i,
                        [p[:3] for p in preds.pts3d_j], preds.conf_j)


def test_predictions_refuse_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(FormatError, match="not a pair-predictions file"):
        PairPredictions.load(tmp_path / "other.npz")

"""Round trips and refusals of the on-disk formats (result folder, pair-predictions cache)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from core.errors import FormatError
from core.predictions import PairPredictions, ViewInfo, prune_cache
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


def test_predictions_every_unreadable_file_is_a_format_error(tmp_path):
    """Whatever is wrong with the file, callers get FormatError naming it, never BadZipFile,
    EOFError, KeyError or numpy's 'pickled data' message."""
    good = tmp_path / "good.npz"
    _predictions(np.random.default_rng(4)).save(good)
    data = good.read_bytes()
    with np.load(good) as npz:
        arrays = dict(npz)
    # A flipped byte inside an array's data: the zip's CRC check catches it.
    offset = data.index(arrays["edge1/pts3d_j"].tobytes()[:16]) + 8
    corrupt = bytearray(data)
    corrupt[offset] ^= 0xFF
    files = {
        "truncated.npz": (data[: len(data) * 2 // 3], "is damaged or truncated"),
        "header.npz": (data[:30], "is damaged or truncated"),
        "empty.npz": (b"", "is not an .npz (zip) archive"),
        "text.npz": (b"plain text\n", "is not an .npz (zip) archive"),
        "corrupt.npz": (bytes(corrupt), "is damaged or truncated"),
    }
    for name, (content, message) in files.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "array.npy", np.zeros(3))
    files["array.npy"] = (None, "is not an .npz (zip) archive")
    del arrays["edge2/conf_i"]
    np.savez(tmp_path / "incomplete.npz", **arrays)
    files["incomplete.npz"] = (None, "lacks the array 'edge2/conf_i'; it is damaged")
    np.savez(tmp_path / "meta.npz", meta_json=np.frombuffer(b"\xff{", np.uint8))
    files["meta.npz"] = (None, "is not a pair-predictions file: unreadable 'meta_json'")
    for name, (_, message) in files.items():
        with pytest.raises(FormatError) as info:
            PairPredictions.load(tmp_path / name)
        assert f"{tmp_path / name} " in str(info.value) and message in str(info.value), name
    with pytest.raises(FormatError, match="does not exist"):
        PairPredictions.load(tmp_path / "missing.npz")
    with pytest.raises(FormatError, match="is a folder"):
        PairPredictions.load(tmp_path)


def test_predictions_warnings_round_trip_and_are_optional(tmp_path):
    preds = _predictions(np.random.default_rng(5))
    preds.warnings = ["trained on 224 px images"]
    preds.save(tmp_path / "pairs.npz")
    assert PairPredictions.load(tmp_path / "pairs.npz").warnings == preds.warnings
    # A file written before the key existed (same version) still loads, without warnings.
    with np.load(tmp_path / "pairs.npz") as npz:
        arrays = dict(npz)
    meta = json.loads(arrays["meta_json"].tobytes())
    del meta["warnings"]
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    assert PairPredictions.load(tmp_path / "old.npz").warnings == []


def test_prune_cache_keeps_the_most_recently_used(tmp_path):
    names = [f"pairs-{k:024x}.npz" for k in range(5)]
    for age, name in enumerate(names):  # names[0] used last
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (2e9 - age, 2e9 - age))
    stale_tmp = tmp_path / f"{names[0]}.tmp.npz"  # a save interrupted two hours ago
    fresh_tmp = tmp_path / f"{names[1]}.tmp.npz"  # a save under way
    for path, mtime in ((stale_tmp, time.time() - 7200), (fresh_tmp, time.time())):
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    unrelated = tmp_path / "pairs-mine.npz"
    unrelated.write_bytes(b"x")
    os.utime(unrelated, (1e9, 1e9))
    removed = prune_cache(tmp_path, keep=2)
    assert sorted(removed) == sorted([stale_tmp, *(tmp_path / n for n in names[2:])])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names[:2], fresh_tmp.name, unrelated.name])
    assert prune_cache(tmp_path, keep=2) == []

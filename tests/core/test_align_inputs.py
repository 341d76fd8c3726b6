"""Global alignment: bad input, options, progress and cancel, determinism, the command line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import synthetic_pairs
from core.align import AlignOptions, align
from core.align.__main__ import main as cli_main
from core.errors import Cancelled, FormatError, InputError
from core.pairs import make_pairs
from core.predictions import PairPredictions
from core.progress import CancelToken, Progress
from core.result import SceneResult

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BAR = dict(focal=0.01, rotation=0.3, translation=2.0)


def small_scene(n=4, seed=20, **kw):
    return synthetic_pairs.make_scene(n, make_pairs(n, "complete"), seed=seed, **kw)


def test_disconnected_graph_reconstructs_the_largest_part_and_names_the_rest():
    pairs = make_pairs(3, "complete") + [(3, 4), (4, 3)]
    scene = synthetic_pairs.make_scene(5, pairs, seed=21)
    result = align(scene.preds)
    assert [im.file for im in result.images] == [v.file for v in scene.preds.views[:3]]
    assert [u["file"] for u in result.unregistered] == [v.file for v in scene.preds.views[3:]]
    assert "synthetic_003.png" in result.warnings[0] and "disconnected" in result.warnings[0]
    errors = synthetic_pairs.result_errors(scene, result, ids=[0, 1, 2])
    assert all(errors[k] < v for k, v in BAR.items()), errors


def test_non_finite_predictions_are_masked_not_propagated():
    scene = small_scene()
    rng = np.random.default_rng(0)
    preds = scene.preds
    for e in range(len(preds.edges)):
        for pts, conf in ((preds.pts3d_i[e], preds.conf_i[e]), (preds.pts3d_j[e], preds.conf_j[e])):
            bad = rng.random(conf.shape) < 0.1
            pts[bad] = np.nan
            conf[rng.random(conf.shape) < 0.05] = np.inf
    # Pixels of image 0 that no edge predicts stay unknown.
    hole = (slice(0, 5), slice(0, 7))
    for e, (i, j) in enumerate(preds.edges):
        if i == 0:
            preds.pts3d_i[e][hole] = np.nan
        if j == 0:
            preds.pts3d_j[e][hole] = np.nan
    result = align(preds)
    for im in result.images:
        assert np.isfinite(im.K).all() and np.isfinite(im.cam2world).all()
        assert np.isfinite(im.conf).all()
    im0 = result.images[0]
    assert np.isnan(im0.pts3d_world[hole]).all() and (im0.conf[hole] == 0).all()
    assert np.isfinite(im0.pts3d_world[10:, 10:]).all()
    errors = synthetic_pairs.result_errors(scene, result)
    assert all(errors[k] < v for k, v in BAR.items()), errors


def test_a_pair_without_any_finite_value_is_dropped_with_a_warning():
    scene = small_scene()
    scene.preds.pts3d_j[2][:] = np.nan
    scene.preds.pts3d_i[2][:] = np.nan
    result = align(scene.preds)
    assert len(result.images) == 4 and "no finite prediction" in result.warnings[0]


def test_nothing_usable_raises_input_error():
    scene = small_scene(n=2)
    for arrays in (scene.preds.pts3d_i, scene.preds.pts3d_j):
        for a in arrays:
            a[:] = np.nan
    with pytest.raises(InputError, match="no usable pair"):
        align(scene.preds)


def test_cache_of_another_format_version_is_refused(tmp_path):
    scene = small_scene(n=2)
    path = tmp_path / "pairs.npz"
    scene.preds.save(path)
    with np.load(path) as npz:
        arrays = dict(npz)
    meta = json.loads(arrays["meta_json"].tobytes())
    meta["version"] = 99
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(FormatError, match="version 99"):
        PairPredictions.load(path)
    assert cli_main([str(path), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_command_line_writes_a_result_folder(tmp_path):
    scene = small_scene(n=3)
    scene.preds.save(tmp_path / "pairs.npz")
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"shared_focal": False, "iterations": 20}))
    assert cli_main([str(tmp_path / "pairs.npz"), "--out", str(tmp_path / "res"),
                     "--options", str(options)]) == 0
    result = SceneResult.load(tmp_path / "res")
    assert result.backend == "dust3r" and len(result.images) == 3
    direct = align(PairPredictions.load(tmp_path / "pairs.npz"), AlignOptions(iterations=20))
    for a, b in zip(result.images, direct.images):
        np.testing.assert_array_equal(a.cam2world, b.cam2world)
        np.testing.assert_array_equal(a.pts3d_world, b.pts3d_world.astype(np.float32))
    assert cli_main([str(tmp_path / "pairs.npz"), "--out", str(tmp_path / "r2"),
                     "--options", '{"iteratons": 3}']) == 1


def test_progress_reports_iterations_and_cancel_stops():
    scene = small_scene()
    messages = []
    align(scene.preds, AlignOptions(iterations=30),
          Progress(lambda stage, f, m: messages.append((stage, f, m))))
    iterations = [m for _, _, m in messages if m.startswith("iteration")]
    assert iterations and "/30, loss " in iterations[0]
    fractions = [f for _, f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    token = CancelToken()

    def cancel_on_first_iteration(stage, f, m):
        if m.startswith("iteration"):
            token.cancel()

    with pytest.raises(Cancelled):
        align(scene.preds, AlignOptions(iterations=30), Progress(cancel_on_first_iteration, token))


def test_deterministic():
    scene = small_scene()
    a, b = align(scene.preds), align(scene.preds)
    for x, y in zip(a.images, b.images):
        np.testing.assert_array_equal(x.cam2world, y.cam2world)
        np.testing.assert_array_equal(x.pts3d_world, y.pts3d_world)


def test_options_are_strict_and_round_trip():
    with pytest.raises(InputError, match="iteratons"):
        AlignOptions.from_dict({"iteratons": 5})
    with pytest.raises(InputError, match="optimizer"):
        AlignOptions(optimizer="sgd")
    with pytest.raises(InputError, match="known_poses\\[1\\]"):
        AlignOptions(known_poses=(None, np.eye(3)))
    with pytest.raises(InputError, match="known_focals\\[0\\]"):
        AlignOptions(known_focals=(-1.0,))
    options = AlignOptions(known_poses=(np.eye(4), None), known_focals=(None, 300.0))
    again = AlignOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert again.to_dict() == options.to_dict()


def _saved_scene(tmp_path, n=2):
    path = tmp_path / "pairs.npz"
    small_scene(n=n).preds.save(path)
    return path


def _cli_error(caplog, argv):
    """Run the command line; return (exit status, its warning and error lines)."""
    caplog.clear()
    status = cli_main([str(a) for a in argv])
    return status, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_command_line_damaged_caches_say_so_in_one_line(tmp_path, caplog):
    path = _saved_scene(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "text.npz"
    text.write_text("a plain text file\n")
    with np.load(path) as npz:
        arrays = dict(npz)
    del arrays["edge1/conf_j"]
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, **arrays)
    cases = {truncated: f"{truncated} is damaged or truncated (BadZipFile",
             text: f"{text} is not a pair-predictions file: it is not an .npz (zip) archive",
             incomplete: f"{incomplete} lacks the array 'edge1/conf_j'; it is damaged",
             tmp_path / "gone.npz": f"{tmp_path / 'gone.npz'} does not exist"}
    for cache, message in cases.items():
        status, lines = _cli_error(caplog, [cache, "--out", tmp_path / "out"])
        assert status == 1 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_command_line_unwritable_out_folder_is_one_line(tmp_path, caplog):
    path = _saved_scene(tmp_path)
    (tmp_path / "file").write_text("a file where a folder is needed")
    out = tmp_path / "file" / "out"
    status, lines = _cli_error(caplog, [path, "--out", out, "--options", '{"iterations": 2}'])
    assert status == 1
    assert lines[-1] == (f"Cannot write the result folder {out}: Not a directory. Choose a "
                         "folder you can write to.")


def test_command_line_bad_options_are_argument_errors(tmp_path, capsys):
    path = _saved_scene(tmp_path)
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{not json")
    cases = {"{bad": "'{bad' is not valid JSON",
             str(tmp_path / "nonexist.json"): f"the file {tmp_path / 'nonexist.json'} does not "
                                               "exist; give a JSON object",
             str(tmp_path / "list.json"): f"{tmp_path / 'list.json'} must be a JSON object",
             str(tmp_path / "broken.json"): f"{tmp_path / 'broken.json'} is not valid JSON"}
    for options, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            cli_main([str(path), "--out", str(tmp_path / "out"), "--options", options])
        assert exit_info.value.code == 2
        assert f"argument --options: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_command_line_repeats_the_warnings_stored_with_the_predictions(tmp_path, caplog):
    scene = small_scene(n=2)
    scene.preds.warnings = ["The checkpoint x was trained on 224 px images; ..."]
    scene.preds.save(tmp_path / "pairs.npz")
    status, lines = _cli_error(caplog, [tmp_path / "pairs.npz", "--out", tmp_path / "res",
                                        "--options", '{"iterations": 2}'])
    assert status == 0 and scene.preds.warnings[0] in lines
    assert SceneResult.load(tmp_path / "res").warnings[0] == scene.preds.warnings[0]


def test_command_line_in_a_process_prints_no_traceback(tmp_path):
    """What a user sees: one line on stderr and exit status 1, no Python traceback."""
    cache = tmp_path / "pairs-0123.npz"
    cache.write_bytes(b"PK\x03\x04" + b"\0" * 40)  # a zip header, then nothing: truncated
    done = subprocess.run([sys.executable, "-m", "core.align", str(cache), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{cache} is damaged or truncated (BadZipFile: File is "
                                        "not a zip file); delete it and re-run the network."]

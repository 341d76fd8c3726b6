"""Registering the add-on, its preferences, and panel settings -> JobConfig (real bpy)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, load_addon, registered_addon

bpy = pytest.importorskip("bpy")

# The add-on's own copy of the core (the package loaded from source), whose classes it raises.
load_addon()
from photo_recon.core.config import JobConfig  # noqa: E402
from photo_recon.core.errors import InputError  # noqa: E402


def _is_registered() -> bool:
    return hasattr(bpy.types.Scene, "recon") and hasattr(bpy.types, "RECON_OT_reconstruct")


def test_register_and_unregister_twice_in_a_row():
    addon = load_addon()
    assert not _is_registered()
    for _ in range(2):
        addon.register()
        assert _is_registered()
        assert bpy.types.RECON_PT_main.bl_category == "Recon"
        assert bpy.ops.recon.reconstruct.get_rna_type().identifier == "RECON_OT_reconstruct"
        assert bpy.context.scene.recon.backend == "classical"
        addon.unregister()
        assert not _is_registered()
        assert not hasattr(bpy.types.WindowManager, "recon_progress")


@pytest.fixture
def registered():
    """The add-on registered and enabled (so that its AddonPreferences exist)."""
    with registered_addon() as prefs:
        yield prefs


def test_preference_defaults_are_blenders_python_and_user_folders(registered):
    from photo_recon.ui import preferences

    prefs = registered
    assert (prefs.python, prefs.device, prefs.weights_dir, prefs.cache_dir) == ("", "auto", "", "")
    assert preferences.worker_python(prefs) == sys.executable
    user = Path(os.environ["BLENDER_USER_RESOURCES"]).resolve()
    for folder in (preferences.cache_folder(prefs), preferences.weights_folder(prefs)):
        assert folder.is_dir() and user in folder.resolve().parents


def test_settings_become_a_job_config(registered, recon_photos, tmp_path):
    from photo_recon.ui.properties import DUST3R_SPEED, resolve_backend, to_job_config

    prefs, props = registered, bpy.context.scene.recon
    prefs.weights_dir, prefs.cache_dir = str(tmp_path / "weights"), str(tmp_path / "cache")
    props.directory, props.backend = str(recon_photos), "dust3r"
    # No weights: the classical backend is used, and the note says where weights were looked for.
    backend, note = resolve_backend(props, prefs)
    assert backend == "classical" and str(tmp_path / "weights") in note
    config = to_job_config(props, prefs)
    assert isinstance(config, JobConfig) and config.backend == "classical"
    assert list(config.images) == [str(recon_photos / f"img{k}.png") for k in range(3)]
    assert config.cache_dir.startswith(str(tmp_path / "cache"))

    (tmp_path / "weights").mkdir()
    weights_512 = tmp_path / "weights" / "DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth"
    weights_512.write_bytes(b"")
    props.resolution, props.pair_graph, props.window, props.preset = "224", "swin", 2, "speed"
    prefs.device = "cpu"
    config = to_job_config(props, prefs)  # no 224 checkpoint: the 512 one at its own size
    assert (config.backend, config.device) == ("dust3r", "cpu")
    assert config.options == {"weights": str(weights_512), "image_size": 512, "graph": "swin",
                              "window": 2, **DUST3R_SPEED}
    weights_224 = tmp_path / "weights" / "DUSt3R_ViTLarge_BaseDecoder_224_linear.pth"
    weights_224.write_bytes(b"")
    config = to_job_config(props, prefs)
    assert (config.options["weights"], config.options["image_size"]) == (str(weights_224), 224)
    props.resolution, props.preset = "512", "quality"
    config = to_job_config(props, prefs)
    assert config.options["weights"] == str(weights_512) and "iterations" not in config.options


def test_settings_without_photos_are_refused(registered, tmp_path):
    from photo_recon.ui.properties import to_job_config

    props = bpy.context.scene.recon
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    for folder, message in ((tmp_path / "empty", "No images"), (tmp_path / "missing", "does not exist")):
        props.directory = str(folder)
        with pytest.raises(InputError, match=message):
            to_job_config(props, registered)


def test_blender_process_never_loads_torch_or_pycolmap(recon_photos, tmp_path):
    """Register, run a job and import it in a fresh interpreter: the heavy packages stay in the
    worker process."""
    code = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
from conftest import load_addon
import bpy
addon = load_addon()
addon.register()
bpy.ops.recon.reconstruct(directory={str(recon_photos)!r}, backend="synthetic")
assert bpy.context.scene.recon.last_collection, "nothing imported"
print("LOADED", sorted(m for m in ("torch", "pycolmap", "PIL") if m in sys.modules))
sys.stdout.flush()
import os
os._exit(0)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "LOADED []" in run.stdout


def _panel_options(registered, photos, backend: str) -> list[dict]:
    """Job options the panel makes for ``backend`` over a spread of settings."""
    from photo_recon.ui.properties import to_job_config

    props = bpy.context.scene.recon
    props.directory, props.backend, props.resolution = str(photos), backend, "512"
    made = []
    for graph, window, preset in (("complete", 3, "quality"), ("swin", 4, "speed"), ("logwin", 2, "quality")):
        props.pair_graph, props.window, props.preset = graph, window, preset
        made.append(to_job_config(props, registered).options)
    return made


def test_classical_options_from_the_panel(registered, recon_photos):
    from photo_recon.ui.properties import CLASSICAL_SPEED

    made = _panel_options(registered, recon_photos, "classical")
    assert made[0] == {"resolution": 512, "matcher": "exhaustive"}
    assert made[1] == {"resolution": 512, "matcher": "sequential", "sequential_overlap": 4,
                       **CLASSICAL_SPEED}
    assert made[2] == {"resolution": 512, "matcher": "auto"}


def test_backends_accept_the_options_the_panel_makes(registered, recon_photos, tmp_path):
    """Each backend's own strict option parser, run in another interpreter (this process never
    imports torch)."""
    if not all(importlib.util.find_spec(m) for m in ("torch", "pycolmap")):
        pytest.skip("the backends' packages are not installed here")
    registered.weights_dir = str(tmp_path)
    (tmp_path / "DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth").write_bytes(b"")
    for backend, parser in (
        ("classical", "from core.classical.backend import ClassicalOptions; "
                      "parse = ClassicalOptions.from_dict"),
        ("dust3r", "from core.dust3r.backend import split_options as parse"),
    ):
        made = _panel_options(registered, recon_photos, backend)
        assert all(("weights" in o) == (backend == "dust3r") for o in made)  # no fallback
        code = f"import json, sys; {parser}; [parse(o) for o in json.loads(sys.argv[1])]"
        run = subprocess.run([sys.executable, "-c", code, json.dumps(made)], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{backend}: {run.stderr[-2000:]}"

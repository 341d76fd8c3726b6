"""Which backend a job gets: the panel falls back from DUSt3R without weights, an explicit request
(the CLI, ``bpy.ops.recon.reconstruct(backend="dust3r")``) never does; a ``weights`` option counts
as weights."""

from __future__ import annotations

import pytest

from conftest import registered_addon

bpy = pytest.importorskip("bpy")


@pytest.fixture
def dust3r_settings(recon_photos, tmp_path):
    """(scene settings, preferences): DUSt3R at 512 px, an empty weights folder."""
    (tmp_path / "weights").mkdir()
    with registered_addon() as prefs:
        prefs.weights_dir, prefs.cache_dir = str(tmp_path / "weights"), str(tmp_path / "cache")
        props = bpy.context.scene.recon
        props.directory, props.backend, props.resolution = str(recon_photos), "dust3r", "512"
        yield props, prefs


def test_explicit_dust3r_without_weights_is_refused(dust3r_settings, tmp_path):
    from photo_recon.core.errors import WeightsError  # the add-on's own class
    from photo_recon.ui.properties import resolve_backend, to_job_config

    props, prefs = dust3r_settings
    assert resolve_backend(props, prefs)[0] == "classical"  # the panel's choice falls back
    assert to_job_config(props, prefs).backend == "classical"
    with pytest.raises(WeightsError) as error:
        to_job_config(props, prefs, backend="dust3r")
    message = str(error.value)
    assert message.startswith(f"No DUSt3R weights found in {tmp_path / 'weights'} (looked for ")
    assert "DUSt3R_ViTLarge_BaseDecoder_512_dpt/model.safetensors" in message
    props.resolution = "224"
    with pytest.raises(WeightsError, match=r"looked for DUSt3R_ViTLarge_BaseDecoder_224_linear\.pth "
                                           r"or DUSt3R_ViTLarge_BaseDecoder_224_linear/model"):
        to_job_config(props, prefs, backend="dust3r")


def test_weights_option_is_dust3r_weights(dust3r_settings, tmp_path):
    from photo_recon.core.errors import WeightsError  # the add-on's own class
    from photo_recon.ui.properties import resolve_backend, to_job_config

    props, prefs = dust3r_settings
    checkpoint = tmp_path / "elsewhere.pth"
    checkpoint.write_bytes(b"")
    extra = {"weights": str(checkpoint)}
    assert resolve_backend(props, prefs, extra) == ("dust3r", "")
    for backend in ("", "dust3r"):  # the panel's choice, and an explicit one
        config = to_job_config(props, prefs, backend=backend, extra_options=extra)
        assert config.backend == "dust3r"
        assert (config.options["weights"], config.options["image_size"]) == (str(checkpoint), 512)
    with pytest.raises(WeightsError, match="elsewhere2.pth does not exist"):
        to_job_config(props, prefs, backend="dust3r",
                      extra_options={"weights": str(tmp_path / "elsewhere2.pth")})


def test_a_weights_folder_that_does_not_exist_is_named(dust3r_settings, tmp_path):
    from photo_recon.core.errors import WeightsError
    from photo_recon.ui.properties import to_job_config

    props, prefs = dust3r_settings
    prefs.weights_dir = str(tmp_path / "typo")
    with pytest.raises(WeightsError, match=r"No DUSt3R weights found in .*typo, which does not exist \(looked for"):
        to_job_config(props, prefs, backend="dust3r")


def test_another_resolutions_checkpoint_is_used_with_a_warning(dust3r_settings, tmp_path, capfd):
    from photo_recon.core.dust3r.download import weights_file
    from photo_recon.core.dust3r.registry import WEIGHTS

    props, prefs = dust3r_settings
    (info,) = [i for i in WEIGHTS.values() if i.preset == "512_dpt"]
    weights_file(info, tmp_path / "weights").parent.mkdir(parents=True, exist_ok=True)
    weights_file(info, tmp_path / "weights").write_bytes(b"PK not really")  # refused by the worker
    props.resolution = "224"
    with pytest.raises(RuntimeError):
        bpy.ops.recon.reconstruct(directory=props.directory, backend="dust3r")
    assert (f"No 224 px DUSt3R checkpoint in {tmp_path / 'weights'}: {weights_file(info, tmp_path).name}"
            f" runs at its own 512 px instead") in capfd.readouterr().out

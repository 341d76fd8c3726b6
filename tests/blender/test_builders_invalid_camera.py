"""A result whose intrinsics no Blender camera can have (a focal length that is not positive and
finite) is refused with a ReconstructionFailed naming the photo, which the operators report as
their error, instead of a ValueError traceback; nothing is left behind (real bpy)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_addon, registered_addon

bpy = pytest.importorskip("bpy")

load_addon()
from photo_recon.core.errors import ReconstructionFailed  # noqa: E402
from photo_recon.core.result import ImageResult, SceneResult  # noqa: E402
from photo_recon.operators.builders import ImportOptions, import_result  # noqa: E402


def _image(name: str, focal: float) -> ImageResult:
    """An 8x6 map of a 16x12 photo seeing a plane at depth 2."""
    K = np.array([[focal, 0.0, 4.0], [0.0, abs(focal), 3.0], [0.0, 0.0, 1.0]])
    v, u = np.mgrid[0:6, 0:8].astype(np.float64)
    pts = np.stack([(u - 4.0) / 10.0 * 2, (v - 3.0) / 10.0 * 2, np.full_like(u, 2.0)], -1)
    return ImageResult(
        file=f"/nonexistent/{name}.jpg", photo_size=(16, 12), K=K, cam2world=np.eye(4),
        photo_from_map=np.diag([2.0, 2.0, 1.0]), pts3d_world=pts.astype(np.float32),
        conf=np.full((6, 8), 5.0, np.float32), colors=np.zeros((6, 8, 3), np.uint8))


def _new_blocks(before):
    return [b.name for kind, old in before.items() for b in set(getattr(bpy.data, kind)) - old]


@pytest.mark.parametrize("focal", [-10.0, 0.0, np.nan])
def test_invalid_intrinsics_are_refused_naming_the_photo(clean_data, focal):
    result = SceneResult(images=[_image("good", 10.0), _image("bad_photo", focal)],
                         backend="test")
    with pytest.raises(ReconstructionFailed, match="bad_photo.jpg invalid intrinsics"):
        import_result(result, ImportOptions(), "Invalid")
    assert _new_blocks(clean_data) == []


def test_reimport_operator_reports_invalid_intrinsics(clean_data, recon_photos, tmp_path):
    with registered_addon() as prefs:
        prefs.cache_dir = str(tmp_path / "cache")
        props = bpy.context.scene.recon
        assert bpy.ops.recon.reconstruct(directory=str(recon_photos),
                                         backend="synthetic") == {"FINISHED"}
        result_dir = props.last_result_dir
        result = SceneResult.load(result_dir)
        result.images[1].K[0, 0] = -result.images[1].K[0, 0]
        result.save(result_dir)
        # The collection deleted: re-import builds the cameras anew from the result.
        collection = bpy.data.collections[props.last_collection]
        bpy.data.batch_remove([*collection.objects, collection])
        before = {kind: set(getattr(bpy.data, kind)) for kind in clean_data}
        # Headless, an operator's ERROR report is raised as RuntimeError with its message.
        with pytest.raises(RuntimeError, match="img1.png invalid intrinsics"):
            bpy.ops.recon.reimport()
        assert _new_blocks(before) == [] and props.last_result_dir == result_dir
        for name in ("last_result_dir", "last_collection"):
            props.property_unset(name)

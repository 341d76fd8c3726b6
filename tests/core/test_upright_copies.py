"""Upright copies of EXIF-rotated photos (Blender ignores EXIF orientation) and JPEG copies of HEIC
photos (Blender cannot read them): written by the worker into the result folder, recorded as
``display_file``, kept through save/load and edits."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from core.config import JobConfig
import core.images as images_module
from core.images import UPRIGHT_FOLDER, load_images, write_upright_copies
from core.job import run_job
from core.result import ImageResult, SceneResult

_ORIENTATION = 0x0112


def save_photo(path: Path, stored_size: tuple[int, int], orientation: int | None, seed: int = 0) -> Path:
    """A smooth random photo of ``stored_size`` (W, H) pixels as stored, with an EXIF orientation
    tag (none if None). Smooth so that JPEG's error stays small and comparable."""
    rng = np.random.default_rng(seed)
    w, h = stored_size
    coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    exif = Image.Exif()
    if orientation is not None:
        exif[_ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif)
    return path


def oriented(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8: the photo as Pillow orients it (the independent reference)."""
    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def stored(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` uint8: the file's pixels as stored, EXIF ignored (as Blender reads them)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def image_result(file: Path, photo_size: tuple[int, int], display_file: str | None = None) -> ImageResult:
    h, w = 3, 4
    return ImageResult(
        file=str(file), photo_size=photo_size, K=np.diag([5.0, 5.0, 1.0]), cam2world=np.eye(4),
        photo_from_map=np.diag([photo_size[0] / w, photo_size[1] / h, 1.0]),
        pts3d_world=np.ones((h, w, 3), np.float32), conf=np.ones((h, w), np.float32),
        colors=np.zeros((h, w, 3), np.uint8), display_file=display_file,
    )


@pytest.mark.parametrize("orientation", [6, 8, 3, 5])
def test_png_copy_is_the_oriented_photo_exactly(tmp_path, orientation):
    photo = save_photo(tmp_path / "phone.shot.png", (40, 24), orientation)
    expected = oriented(photo)
    # Rotations by a quarter turn (and the transposes 5, 7) swap the sides; 3 (half turn) keeps them.
    assert expected.shape[:2] == ((24, 40) if orientation == 3 else (40, 24))
    (im,) = images = [image_result(photo, expected.shape[1::-1])]
    write_upright_copies(images, tmp_path / "result")
    assert im.display_file == str(tmp_path / "result" / UPRIGHT_FOLDER / "0" / "phone.shot.png")
    assert im.upright_file == im.display_file
    np.testing.assert_array_equal(stored(im.display_file), expected)
    with Image.open(im.display_file) as copy:  # its stored pixels are upright: no EXIF turn left
        assert copy.getexif().get(_ORIENTATION) in (None, 1)


def test_jpeg_copy_is_the_oriented_photo_within_jpeg_error(tmp_path):
    photo = save_photo(tmp_path / "IMG_0001.JPG", (48, 64), 6)
    expected = oriented(photo).astype(np.int16)
    images = [image_result(photo, (64, 48))]
    write_upright_copies(images, tmp_path / "result")
    copy = Path(images[0].display_file)
    assert copy.name == "IMG_0001.jpg"
    with Image.open(copy) as img:
        assert img.format == "JPEG" and img.size == (64, 48)
    error = np.abs(stored(copy).astype(np.int16) - expected)
    # Quality 95 re-encoding of an already decoded JPEG: a few levels, never a misplaced pixel
    # (a transposed or unrotated copy would differ by ~50 levels on average).
    assert error.mean() < 2.0 and np.percentile(error, 99) <= 8


def test_upright_photos_get_no_copy(tmp_path):
    plain = save_photo(tmp_path / "plain.png", (40, 24), None)
    tagged_upright = save_photo(tmp_path / "upright.jpg", (40, 24), 1)
    turned = save_photo(tmp_path / "turned.jpg", (40, 24), 6)
    # A stale display_file (e.g. from a reloaded result) is cleared for an upright photo.
    images = [image_result(plain, (40, 24), display_file="/old/copy.png"),
              image_result(tagged_upright, (40, 24)), image_result(turned, (24, 40))]
    write_upright_copies(images, tmp_path / "result")
    assert [im.display_file is None for im in images] == [True, True, False]
    assert [im.upright_file for im in images[:2]] == [str(plain), str(tagged_upright)]
    assert sorted(p.name for p in (tmp_path / "result" / UPRIGHT_FOLDER).iterdir()) == ["2"]


def test_unreadable_photo_keeps_its_display_file(tmp_path, caplog):
    images = [image_result(tmp_path / "gone.jpg", (40, 24), display_file="/old/result/upright/0/gone.jpg")]
    with caplog.at_level(logging.WARNING, logger="core.images"):
        write_upright_copies(images, tmp_path / "result")
    assert images[0].display_file == "/old/result/upright/0/gone.jpg"
    assert "No upright copy of" in caplog.text and "gone.jpg" in caplog.text


def test_display_file_round_trip_moves_with_the_folder(tmp_path):
    photo = save_photo(tmp_path / "turned.png", (40, 24), 6)
    outside = str(tmp_path / "elsewhere" / "copy.png")
    scene = SceneResult(images=[image_result(photo, (24, 40)), image_result(photo, (24, 40), outside),
                                image_result(photo, (24, 40))], backend="test")
    write_upright_copies(scene.images[:1], tmp_path / "result")
    scene.save(tmp_path / "result")
    meta = json.loads((tmp_path / "result" / "result.json").read_text())
    # Inside the folder: stored relative; outside (an edit pointing at its original): absolute.
    assert [m.get("display_file") for m in meta["images"]] == [
        f"{UPRIGHT_FOLDER}/0/turned.png", outside, None]
    assert "display_file" not in meta["images"][2]
    shutil.move(tmp_path / "result", tmp_path / "moved")
    back = SceneResult.load(tmp_path / "moved")
    assert [im.display_file for im in back.images] == [
        str(tmp_path / "moved" / UPRIGHT_FOLDER / "0" / "turned.png"), outside, None]
    np.testing.assert_array_equal(stored(back.images[0].upright_file), oriented(photo))
    assert back.images[2].upright_file == str(photo)
    # An edit saved beside it keeps pointing at the same copy.
    back.save(tmp_path / "moved-edit1")
    edited = SceneResult.load(tmp_path / "moved-edit1")
    assert edited.images[0].display_file == back.images[0].display_file


def test_result_written_before_the_field_loads(tmp_path):
    """A version-1 result.json as written before display_file existed: no such key anywhere."""
    photo = save_photo(tmp_path / "turned.png", (40, 24), 6)
    SceneResult(images=[image_result(photo, (24, 40))], backend="test").save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "result.json").read_text())
    assert set(meta["images"][0]) == {"file", "photo_size", "size", "K", "cam2world", "photo_from_map",
                                      "has_depth"}
    (im,) = SceneResult.load(tmp_path / "old").images
    assert im.display_file is None and im.upright_file == str(photo)


def test_worker_writes_upright_copies_into_its_result(tmp_path):
    """The real worker process with the synthetic backend (which sizes its cameras from the photos):
    the rotated phone photos get copies inside ``result/``, the upright one none."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, orientation in enumerate((6, 8, None)):
        save_photo(folder / f"view_{k}.jpg", (48, 64), orientation, seed=k)
    job = JobConfig(images=(str(folder),), backend="synthetic", options={"size": 32}, seed=1)
    result = run_job(job, tmp_path / "job")
    result_dir = (tmp_path / "job" / "result").resolve()
    assert [tuple(im.photo_size) for im in result.images] == [(64, 48), (64, 48), (48, 64)]
    assert result.images[2].display_file is None
    for k, im in enumerate(result.images[:2]):
        assert Path(im.display_file) == result_dir / UPRIGHT_FOLDER / str(k) / f"view_{k}.jpg"
        copy = stored(im.upright_file).astype(np.int16)
        assert copy.shape[1::-1] == tuple(im.photo_size)
        assert np.abs(copy - oriented(Path(im.file))).mean() < 2.0
    assert not (tmp_path / "job" / "result.partial").exists()


def test_heic_photos_load_and_get_a_jpeg_copy_blender_can_read(tmp_path):
    # iPhones shoot HEIC by default; Blender has no HEIC reader, so the copy is a JPEG.
    pillow_heif = pytest.importorskip("pillow_heif")
    pixels = stored(save_photo(tmp_path / "source.png", (64, 48), None))
    heic = tmp_path / "photos" / "IMG_0002.HEIC"
    heic.parent.mkdir()
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(heic, quality=95)
    decoded = pillow_heif.open_heif(heic).to_pillow()  # libheif's own decode: the reference
    (loaded,), skipped = load_images(heic.parent, size=224)
    assert skipped == [] and loaded.photo_size == (64, 48)
    images = [image_result(heic, (64, 48))]
    write_upright_copies(images, tmp_path / "result")
    copy = Path(images[0].display_file)
    assert copy.name == "IMG_0002.jpg"
    error = np.abs(stored(copy).astype(np.int16) - np.asarray(decoded.convert("RGB"), np.int16))
    assert error.mean() < 2 and np.percentile(error, 99) < 8


def test_without_pillow_heif_heic_photos_are_skipped_saying_why(tmp_path, monkeypatch):
    monkeypatch.setattr(images_module, "pillow_heif", None)  # a Worker Python without it
    save_photo(tmp_path / "a.jpg", (32, 24), None)
    (tmp_path / "IMG_0003.heic").write_bytes(b"\0\0\0\x18ftypheic")  # never opened
    loaded, skipped = load_images(tmp_path, size=224)
    assert [Path(im.file).name for im in loaded] == ["a.jpg"]
    (entry,) = skipped
    assert entry["file"].endswith("IMG_0003.heic")
    assert "lacks pillow-heif" in entry["reason"] and "convert the photos to JPEG" in entry["reason"]

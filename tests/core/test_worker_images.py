"""The worker's photo checks, through the real subprocess: empty/unreadable folders, one photo,
mixed sizes and EXIF orientations, non-image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import JobConfig
from core.errors import InputError
from core.job import run_job

EXIF_ORIENTATION = 0x0112


def _photo(path: Path, size: tuple[int, int], orientation: int | None = None, seed: int = 0) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    if orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        img.save(path, exif=exif)
    return path


def _job(images, **options) -> JobConfig:
    return JobConfig(images=tuple(str(p) for p in images), backend="synthetic", options={"size": 32, **options})


def test_folder_without_readable_photos_names_the_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=f"No readable photo in {folder}"):
        run_job(_job([folder]), tmp_path / "job")


def test_empty_folder_is_an_input_error(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(InputError, match=f"No readable photo in {folder}.*no image files found"):
        run_job(_job([folder]), tmp_path / "job")


def test_listed_files_all_unreadable_name_their_folder(tmp_path):
    bad = tmp_path / "a.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match=f"No readable photo in {tmp_path}"):
        run_job(_job([bad]), tmp_path / "job")


def test_one_photo_works(tmp_path):
    photo = _photo(tmp_path / "only.jpg", (80, 60))
    result = run_job(_job([photo]), tmp_path / "job")
    assert [im.file for im in result.images] == [str(photo)]
    assert tuple(result.images[0].photo_size) == (80, 60)
    assert result.warnings == []


def test_mixed_sizes_and_exif_orientations(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    # Stored size -> size after EXIF orientation (5..8 swap width and height).
    cases = {
        "a_plain.png": ((64, 48), None, (64, 48)),
        "b_portrait.jpg": ((48, 80), 1, (48, 80)),
        "c_rot90.jpg": ((100, 60), 6, (60, 100)),
        "d_rot270.jpg": ((90, 40), 8, (40, 90)),
        "e_flip.jpg": ((70, 50), 3, (70, 50)),
    }
    for k, (name, (size, orientation, _)) in enumerate(cases.items()):
        _photo(folder / name, size, orientation, seed=k)
    result = run_job(_job([folder]), tmp_path / "job")
    assert [Path(im.file).name for im in result.images] == list(cases)
    for im, (_, _, oriented) in zip(result.images, cases.values()):
        assert tuple(im.photo_size) == oriented
        w, h = im.size
        assert max(w, h) == 32 and (w > h) == (oriented[0] > oriented[1])
        # photo_from_map takes the map grid's outer corners to the photo's.
        corners = im.photo_from_map @ np.array([[-0.5, w - 0.5], [-0.5, h - 0.5], [1, 1]])
        np.testing.assert_allclose(corners[:2].T, [[-0.5, -0.5], [oriented[0] - 0.5, oriented[1] - 0.5]], atol=1e-9)


def test_non_image_and_unreadable_files_are_skipped_with_a_warning(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = [_photo(folder / f"img{k}.png", (40, 30), seed=k) for k in range(2)]
    (folder / "readme.txt").write_text("not a photo")
    (folder / "truncated.jpg").write_bytes(_photo(tmp_path / "full.jpg", (64, 48)).read_bytes()[:200])
    result = run_job(_job([folder]), tmp_path / "job")
    assert [im.file for im in result.images] == [str(p) for p in good]
    assert len(result.warnings) == 2
    assert any(w.startswith("Skipped readme.txt: not an image file") for w in result.warnings)
    assert any(w.startswith("Skipped truncated.jpg: unreadable or truncated") for w in result.warnings)


def test_a_listed_non_image_file_is_skipped_too(tmp_path):
    photo = _photo(tmp_path / "p.png", (40, 30))
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    result = run_job(_job([photo, notes]), tmp_path / "job")
    assert [im.file for im in result.images] == [str(photo)]
    assert len(result.warnings) == 1 and result.warnings[0].startswith("Skipped notes.txt")


def test_no_photos_for_a_backend_that_needs_them(tmp_path):
    job = JobConfig(images=(), backend="classical")
    with pytest.raises(InputError, match="lists no photos"):
        run_job(job, tmp_path / "job")

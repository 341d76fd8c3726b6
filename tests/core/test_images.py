"""Image loading: exact match with the official loader, the photo_from_map transform, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import InputError
from core.images import list_image_files, load_images, load_photo, normalize, resize_and_crop

GOLDEN_NAMES = [
    "dtu_scan65_000000.jpg",
    "exif_orientation6.jpg",
    "nerf_synthetic_lego_r_0.png",
    "odd_size_333x517.png",
    "tartanair_indoor_seq_000000.jpg",
]


@pytest.fixture(scope="module")
def preprocess_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "preprocess"


@pytest.mark.shared
@pytest.mark.parametrize("size", [512, 224])
def test_matches_official_loader_exactly(preprocess_dir: Path, size: int):
    golden = np.load(preprocess_dir / "preprocess_golden.npz", allow_pickle=False)
    loaded, skipped = load_images(preprocess_dir / "inputs", size=size)
    assert skipped == []
    assert [Path(im.file).name for im in loaded] == GOLDEN_NAMES
    for im in loaded:
        expected = golden[f"{size}/{Path(im.file).name}"]
        assert im.rgb.dtype == np.uint8
        assert im.rgb.shape == expected.shape, im.file
        np.testing.assert_array_equal(im.rgb, expected, err_msg=im.file)


@pytest.mark.shared
def test_exif_orientation_and_photo_size(preprocess_dir: Path):
    path = preprocess_dir / "inputs" / "exif_orientation6.jpg"
    with Image.open(path) as raw:
        stored_w, stored_h = raw.size
    photo = load_photo(path)
    (im,), _ = load_images([path])
    assert stored_w > stored_h  # stored landscape ...
    assert photo.shape == (stored_w, stored_h, 3)  # ... displayed portrait
    assert im.photo_size == (stored_h, stored_w)


@pytest.mark.shared
def test_crop_box_corners_land_inside_photo(preprocess_dir: Path):
    """Network corners map to the crop box: the 4:3 crop of the square image is centred."""
    (im,), _ = load_images([preprocess_dir / "inputs" / "nerf_synthetic_lego_r_0.png"])
    h, w = im.rgb.shape[:2]
    assert (w, h) == (512, 384)
    # The crop spans photo pixel edges [x0, x1) x [y0, y1); pixel centres are at edges + 0.5.
    edges = im.photo_from_map @ np.array([[-0.5, w - 0.5], [-0.5, h - 0.5], [1.0, 1.0]])
    photo_w, photo_h = im.photo_size
    assert edges[0, 0] + 0.5 == pytest.approx(0.0, abs=1e-9)
    assert edges[0, 1] + 0.5 == pytest.approx(photo_w, abs=1e-9)
    # Vertical crop of 384 of 512 resized rows: 64 resized rows cut at top and bottom.
    scale = photo_w / 512
    assert edges[1, 0] + 0.5 == pytest.approx(64 * scale, abs=1e-9)
    assert edges[1, 1] + 0.5 == pytest.approx(photo_h - 64 * scale, abs=1e-9)


@pytest.mark.parametrize(
    ("photo_w", "photo_h", "size"),
    [(1000, 700, 512), (200, 150, 512), (90, 130, 512), (400, 400, 512), (300, 260, 224)],
)
def test_photo_from_map_matches_resampled_coordinates(photo_w: int, photo_h: int, size: int):
    """A float photo whose value is its own x (or y) pixel coordinate, resized by Pillow itself:
    away from the borders the resampling kernels reproduce a linear ramp, so each network pixel
    holds the photo coordinate of its centre, which photo_from_map must predict."""
    xs = np.broadcast_to(np.arange(photo_w, dtype=np.float32), (photo_h, photo_w))
    ys = np.broadcast_to(np.arange(photo_h, dtype=np.float32)[:, None], (photo_h, photo_w))
    x_map, photo_from_map = resize_and_crop(Image.fromarray(np.ascontiguousarray(xs), "F"), size)
    y_map, _ = resize_and_crop(Image.fromarray(np.ascontiguousarray(ys), "F"), size)
    h, w = x_map.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    mapped = np.einsum("ij,jhw->ihw", photo_from_map, np.stack([u, v, np.ones_like(u)]))
    border = 10
    inner = (slice(border, -border), slice(border, -border))
    # A half-pixel convention slip would be off by 0.5 * |scale - 1| >= 0.08 px here.
    np.testing.assert_allclose(x_map[inner], mapped[0][inner], atol=0.02)
    np.testing.assert_allclose(y_map[inner], mapped[1][inner], atol=0.02)
    assert photo_from_map[2].tolist() == [0.0, 0.0, 1.0]


def test_photo_intrinsics_from_known_camera():
    """K on the network grid composed with photo_from_map gives the photo's own K."""
    photo_w, photo_h = 1200, 700
    K_photo_true = np.array([[1000.0, 0, 610.0], [0, 1010.0, 340.0], [0, 0, 1]])
    rgb, photo_from_map = resize_and_crop(Image.new("RGB", (photo_w, photo_h)), 512)
    # Independently: the photo becomes 512 x round(700 * 512 / 1200) = 512 x 299, then 288 rows
    # (a multiple of 16) are kept around row 299 // 2; pixel centres scale about pixel edges.
    resized_h = 299
    assert rgb.shape[:2] == (288, 512)
    sx, sy = 512 / photo_w, resized_h / photo_h
    left, top = 0, resized_h // 2 - 288 // 2
    K_map = np.array(
        [
            [1000.0 * sx, 0, (610.0 + 0.5) * sx - 0.5 - left],
            [0, 1010.0 * sy, (340.0 + 0.5) * sy - 0.5 - top],
            [0, 0, 1],
        ]
    )
    np.testing.assert_allclose(photo_from_map @ K_map, K_photo_true, atol=1e-9)


def test_mixed_sizes_and_orientations(tmp_path: Path):
    rng = np.random.default_rng(0)
    sizes = [(640, 480), (480, 640), (300, 300), (1000, 250)]
    paths = []
    for k, (w, h) in enumerate(sizes):
        path = tmp_path / f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    loaded, skipped = load_images(paths)
    assert skipped == []
    shapes = [im.rgb.shape[:2] for im in loaded]
    assert shapes == [(384, 512), (512, 384), (384, 512), (128, 512)]
    assert [im.photo_size for im in loaded] == sizes


def test_normalize_range_and_layout():
    rgb = np.array([[[0, 128, 255]]], dtype=np.uint8)
    x = normalize(rgb)
    assert x.shape == (3, 1, 1) and x.dtype == np.float32
    expected = [(v / 255 - 0.5) / 0.5 for v in (0, 128, 255)]  # float64 re-computation
    np.testing.assert_allclose(x[:, 0, 0], expected, atol=1e-6)


def _write_photo(path: Path, fmt: str = "JPEG") -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(path, fmt)


def test_bad_files_are_skipped_with_reasons(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    _write_photo(tmp_path / "a_good.jpg")
    full = (tmp_path / "a_good.jpg").read_bytes()
    (tmp_path / "b_truncated.jpg").write_bytes(full[: len(full) // 2])
    (tmp_path / "c_text.jpg").write_text("not a photo at all\n")
    (tmp_path / "notes.txt").write_text("shot list\n")
    assert [Path(p).name for p in list_image_files(tmp_path)] == [
        "a_good.jpg",
        "b_truncated.jpg",
        "c_text.jpg",
    ]
    with caplog.at_level(logging.WARNING, logger="core.images"):
        loaded, skipped = load_images(tmp_path)
    assert [Path(im.file).name for im in loaded] == ["a_good.jpg"]
    reasons = {Path(s["file"]).name: s["reason"] for s in skipped}
    assert set(reasons) == {"b_truncated.jpg", "c_text.jpg", "notes.txt"}
    assert "truncated" in reasons["b_truncated.jpg"]
    assert "not an image" in reasons["notes.txt"]
    for name in reasons:
        assert name in caplog.text


def test_no_usable_image_raises_input_error(tmp_path: Path):
    (tmp_path / "c_text.jpg").write_text("not a photo at all\n")
    with pytest.raises(InputError, match="No usable photo.*c_text.jpg"):
        load_images(tmp_path)
    with pytest.raises(InputError, match="No usable photo"):
        load_images(tmp_path / "missing.jpg")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no image files found"):
        load_images(empty)


def test_load_photo_bad_file_and_bad_size(tmp_path: Path):
    (tmp_path / "c_text.jpg").write_text("not a photo at all\n")
    with pytest.raises(InputError, match="c_text.jpg"):
        load_photo(tmp_path / "c_text.jpg")
    _write_photo(tmp_path / "ok.png", "PNG")
    with pytest.raises(InputError, match="size 300"):
        load_images([tmp_path / "ok.png"], size=300)

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from core import masks


def test_hsv_matches_colorsys_on_swapped_channels():
    # Independent route: Python's colorsys in float64, converted to OpenCV's 8-bit units.
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    rgb[0, :5] = [[0, 0, 0], [255, 255, 255], [10, 10, 10], [255, 0, 0], [0, 0, 255]]
    hsv = masks._opencv_hsv_u8(rgb)
    for (y, x) in [(0, i) for i in range(5)] + [tuple(p) for p in rng.integers(0, 40, (200, 2))]:
        h, s, v = colorsys.rgb_to_hsv(*(rgb[y, x].astype(float) / 255.0))
        expected = np.array([h * 180.0, s * 255.0, v * 255.0])
        got = hsv[y, x].astype(float)
        dh = abs(got[0] - expected[0])
        assert min(dh, 180.0 - dh) <= 0.51, (rgb[y, x], got, expected)
        np.testing.assert_allclose(got[1:], expected[1:], atol=0.51)


def _scene(sky_rgb):
    img = np.zeros((60, 80, 3), np.uint8)
    img[:25] = sky_rgb
    img[25:] = (90, 120, 40)  # grass
    truth = np.zeros((60, 80), bool)
    truth[:25] = True
    return img, truth


@pytest.mark.parametrize("sky_rgb", [(100, 150, 230), (0, 0, 255), (215, 218, 222)])
def test_sky_mask_finds_blue_and_overcast_sky(sky_rgb):
    img, truth = _scene(sky_rgb)
    np.testing.assert_array_equal(masks.sky_mask(img), truth)


def test_sky_mask_drops_small_blobs_and_keeps_red():
    img, truth = _scene((100, 150, 230))
    img[40:43, 10:13] = (100, 150, 230)  # 3x3 blue speck: removed by the 5x5 opening
    img[35:45, 50:60] = (100, 150, 230)  # 10x10 blue object: below half the sky's size
    img[50:58, 20:30] = (255, 0, 0)  # red is not sky even though the reference swaps channels
    np.testing.assert_array_equal(masks.sky_mask(img), truth)


def test_sky_mask_keeps_components_above_half_the_largest():
    img = np.full((60, 80, 3), (90, 120, 40), np.uint8)
    img[:20, :40] = (100, 150, 230)  # 800 px
    img[:20, 50:] = (100, 150, 230)  # 600 px > 400: kept
    img[40:50, 60:75] = (100, 150, 230)  # 150 px: dropped
    truth = np.zeros((60, 80), bool)
    truth[:20, :40] = truth[:20, 50:] = True
    np.testing.assert_array_equal(masks.sky_mask(img), truth)


def test_sky_mask_none():
    img = np.full((30, 30, 3), (90, 120, 40), np.uint8)
    assert not masks.sky_mask(img).any()


def test_valid_mask():
    pts = np.ones((3, 4, 3), np.float32)
    pts[0, 0, 1] = np.nan
    conf = np.full((3, 4), 2.0, np.float32)
    conf[1, 1] = 1.0
    conf[2, 2] = 1.5  # equal to the threshold: dropped (strictly above is kept)
    exclude = np.zeros((3, 4), bool)
    exclude[2, 3] = True
    m = masks.valid_mask(pts, conf, 1.5, exclude)
    expected = np.ones((3, 4), bool)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = expected[2, 3] = False
    np.testing.assert_array_equal(m, expected)


@pytest.mark.parametrize("count,max_points", [(1000, 100), (1000, 900)])
def test_limit_points(count, max_points):
    assert masks.limit_points(10, 0) is None
    assert masks.limit_points(10, 10) is None
    keep = masks.limit_points(count, max_points, seed=3)
    assert keep.shape == (count,) and keep.dtype == bool and keep.sum() == max_points
    np.testing.assert_array_equal(keep, masks.limit_points(count, max_points, seed=3))
    assert not np.array_equal(keep, masks.limit_points(count, max_points, seed=4))


def test_importing_masks_loads_neither_torch_nor_scipy():
    # Blender imports this module with the add-on: it must stay light (scipy only on use).
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, core.masks; assert not {'torch', 'scipy'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True)

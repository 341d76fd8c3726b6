"""Fixtures of the add-on tests: small photo folders, and the add-on registered from source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PHOTO_SIZES = ((64, 48), (48, 64), (80, 60))
"""(width, height) of the photos of :func:`recon_photos`: landscape, portrait, another size."""


@pytest.fixture
def recon_photos(tmp_path: Path) -> Path:
    """A folder with three PNG photos of different sizes and orientations, a text file and a
    sub-folder (both must be ignored)."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(PHOTO_SIZES):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / f"img{k}.png")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "sub").mkdir()
    return folder

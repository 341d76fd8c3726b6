"""Fixtures of the add-on tests: small photo folders, and a clean ``bpy.data`` for each test.

The test modules import :data:`DATA_KINDS` as ``from tests.blender.conftest import DATA_KINDS``:
pytest (``--import-mode=importlib``) registers this file under that name, and a plain
``from conftest import ...`` resolves to ``tests/conftest.py`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PHOTO_SIZES = ((64, 48), (48, 64), (80, 60))
"""(width, height) of the photos of :func:`recon_photos`: landscape, portrait, another size."""

DATA_KINDS = ("objects", "collections", "meshes", "cameras", "images", "materials", "node_groups",
              "pointclouds")
"""The ``bpy.data`` collections the add-on creates data-blocks in (``pointclouds``: the native
point cloud of Blender 4.5 and 5.0)."""


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


@pytest.fixture
def clean_data():
    """Remove every data-block a test created, so that tests do not see each other's objects and
    a test's counts of data-blocks do not depend on which tests ran before it. Yields ``before``,
    ``{kind: set of data-blocks}`` for each of :data:`DATA_KINDS` as the test started, for tests
    that check that nothing new was left behind. bpy is imported here, not at module level, so
    that collecting this folder without bpy does not fail here."""
    import bpy

    before = {kind: set(getattr(bpy.data, kind)) for kind in DATA_KINDS}
    yield before
    bpy.data.batch_remove(
        [b for kind in DATA_KINDS for b in set(getattr(bpy.data, kind)) - before[kind]]
    )

"""Build a tiny pure-Python wheel offline, for tests that install or bundle wheels.

The wheel is made by ``pip wheel`` from a package written into a temporary folder (setuptools
from the test environment, no build isolation, no index), so the tests never download anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DUMMY_NAME = "recon_dummy_dep"
DUMMY_VERSION = "1.2.3"


def build_dummy_wheel(workdir: Path, out_dir: Path) -> Path:
    """Write the package ``recon_dummy_dep`` (whose ``answer()`` returns 42) and build its wheel.

    Returns the path of ``recon_dummy_dep-1.2.3-py3-none-any.whl`` in ``out_dir``.
    """
    src = workdir / "dummy_src"
    (src / DUMMY_NAME).mkdir(parents=True)
    (src / DUMMY_NAME / "__init__.py").write_text(
        f'__version__ = "{DUMMY_VERSION}"\n\n\ndef answer():\n    return 42\n'
    )
    (src / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["setuptools"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        "[project]\n"
        f'name = "{DUMMY_NAME}"\n'
        f'version = "{DUMMY_VERSION}"\n'
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-index", "--no-deps",
         "-q", "-w", str(out_dir), str(src)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = out_dir.glob(f"{DUMMY_NAME}-{DUMMY_VERSION}-*.whl")
    return wheel

"""Write a tiny pure-Python wheel offline, for tests that install or bundle wheels.

The wheel is assembled directly with :mod:`zipfile` following the wheel format (PEP 427:
``.dist-info`` with METADATA, WHEEL and a RECORD of SHA-256 digests), so it needs neither
setuptools nor an index: the bpy 5.0 test environment has no setuptools, and tests never
download anything.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

DUMMY_NAME = "recon_dummy_dep"
DUMMY_VERSION = "1.2.3"


def _record_entry(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


def build_dummy_wheel(
    out_dir: Path, name: str = DUMMY_NAME, version: str = DUMMY_VERSION,
    requires: tuple[str, ...] = (),
) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``out_dir`` and return its path.

    The package's ``__init__`` sets ``__version__`` and ``answer()`` returns 42; ``requires``
    become ``Requires-Dist`` lines (to see what pip pulls in along with it).
    """
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {req}\n" for req in requires)
    files = {
        f"{name}/__init__.py":
            f'__version__ = "{version}"\n\n\ndef answer():\n    return 42\n'.encode(),
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: photo_recon-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
    }
    record = "".join(_record_entry(p, data) for p, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist_info}/RECORD", record)
    return wheel

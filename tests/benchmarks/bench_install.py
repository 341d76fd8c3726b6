"""Install time and disk use of built extension zips (run ``make zips`` first).

    python tests/benchmarks/bench_install.py [dist/photo_recon-0.1.0-linux_x64.zip ...]

Each zip is installed and enabled by the bpy module of this environment in a fresh interpreter
with an empty ``BLENDER_USER_RESOURCES``; prints the zip size, the time of
``package_install_files`` (install + wheel unpacking + enable) and the user folder's size.
Without arguments: every zip for this platform under ``dist/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

_INSTALL = r"""
import os, sys, time
import bpy
start = time.perf_counter()
result = bpy.ops.extensions.package_install_files(
    filepath=sys.argv[1], repo="user_default", enable_on_install=True)
print("RESULT", sorted(result)[0], time.perf_counter() - start)
sys.stdout.flush()
os._exit(0)  # bpy 4.5 can hang in its exit handlers
"""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def bench(zip_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-install-") as user:
        env = dict(os.environ, BLENDER_USER_RESOURCES=user)
        out = subprocess.run([sys.executable, "-c", _INSTALL, str(zip_path)], env=env,
                             capture_output=True, text=True, timeout=900).stdout
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT")), "RESULT ? nan")
        _, state, seconds = line.split()
        print(f"{zip_path.name}: zip {zip_path.stat().st_size / 2**20:.1f} MiB, install+enable "
              f"{float(seconds):.2f} s ({state}), user folder {folder_bytes(Path(user)) / 2**20:.0f} MiB")


def main() -> None:
    zips = [Path(a) for a in sys.argv[1:]] or sorted((REPO_ROOT / "dist").rglob("*linux_x64.zip"))
    if not zips:
        raise SystemExit("No zips: run `make zips` (and `make zips TORCH_BUNDLE=1`) first.")
    for zip_path in zips:
        bench(zip_path)


if __name__ == "__main__":
    main()

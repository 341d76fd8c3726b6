"""Build one extension zip per platform with Blender's own builder, wheels bundled.

    python wheels/build.py [--platforms linux-x64,windows-x64,macos-arm64] [--torch-bundle]
                           [--out dist] [--update-hashes]

Steps: download the pinned wheels of ``wheels/requirements.txt`` (and, with ``--torch-bundle``,
``wheels/requirements-torch.txt``) for each platform into ``build/wheels/`` with
``pip download --only-binary=:all: --no-deps --platform ... --python-version 3.11``; check every
file against ``wheels/SHA256SUMS``; copy the extension into ``build/stage/`` with those wheels and
a manifest whose ``wheels`` and ``platforms`` list them; run Blender's ``blender_ext.py build
--split-platforms`` (found inside the installed ``bpy`` package, never copied into the repository;
it runs under plain Python); ``validate`` each zip and print its size.

Nothing here is imported by the extension; ``tests/blender/test_install.py`` reuses
:func:`stage_extension`, :func:`build_zips` and :func:`validate_zip` with a local wheel.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.11"
"""The Python of Blender 4.2 LTS through 5.0 (cp311 wheels)."""

PLATFORM_TAGS: dict[str, tuple[str, ...]] = {
    "linux-x64": ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                  "manylinux2014_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64",
                    "macosx_14_0_arm64"),
}
"""Blender platform name -> the wheel platform tags pip may pick for it, most preferred first:
on macOS the oldest system a wheel exists for (Blender 4.2 runs on macOS 11.2)."""

TORCH_LOCAL_VERSION = {"linux-x64": "+cpu"}
"""The CPU build of torch for Linux is published with a local version on PyTorch's CPU index
(PyPI's Linux wheel is the CUDA one, which needs separate nvidia-* wheels of several GB)."""

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

FORBIDDEN = ("numpy",)
"""Never bundled: Blender's own numpy must stay the one every add-on sees."""

# Files and folders of the checkout that are not part of the extension (the manifest's [build]
# exclusions still apply when Blender's builder zips the staged copy).
_STAGE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", ".pytest_cache", "__pycache__", "*.pyc", "build", "dist", "demo_out",
    "tests", "wheels", "*.zip",
)


def find_blender_ext() -> Path:
    """``blender_ext.py`` inside the installed ``bpy`` package (located without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The bpy package is not installed here; run `make setup` first.")
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(root.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"blender_ext.py not found inside {root}.")
    return found[-1]


def read_requirements(path: Path) -> list[str]:
    """Requirement lines of ``path`` without comments; refuses numpy."""
    reqs = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    reqs = [r for r in reqs if r]
    for req in reqs:
        if normalize(re.split(r"[=<>!~ ;\[]", req)[0]) in FORBIDDEN:
            raise SystemExit(f"{path}: {req!r} must not be bundled (Blender ships its own numpy).")
    return reqs


def normalize(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 503 + underscores)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_rank(filename: str, dist: str, version: str, platform: str) -> int | None:
    """Preference of wheel ``filename`` for ``dist==version`` on Blender ``platform``: the index
    in :data:`PLATFORM_TAGS` of its best platform tag (0 for pure wheels); None if it is another
    package or version, or not installable there."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    name, ver, plat = parts[0], parts[1], parts[-1]
    if normalize(name) != normalize(dist) or ver != version:
        return None
    tags = PLATFORM_TAGS[platform]
    ranks = [0 if tag == "any" else tags.index(tag) for tag in plat.split(".")
             if tag == "any" or tag in tags]
    return min(ranks) if ranks else None


def download(reqs: list[str], platform: str, dest: Path) -> list[Path]:
    """``pip download`` ``reqs`` for ``platform`` into ``dest``; returns the chosen wheel files."""
    reqs = [
        f"{r}{TORCH_LOCAL_VERSION[platform]}"
        if r.startswith("torch==") and platform in TORCH_LOCAL_VERSION else r
        for r in reqs
    ]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
           "--python-version", PYTHON_VERSION, "--implementation", "cp", "-d", str(dest),
           "--progress-bar", "off", "-q"]
    for tag in PLATFORM_TAGS[platform]:
        cmd += ["--platform", tag]
    if any("+" in r for r in reqs):
        cmd += ["--extra-index-url", TORCH_CPU_INDEX]
    subprocess.run([*cmd, *reqs], check=True)
    chosen = []
    for req in reqs:
        dist, version = req.split("==")
        ranked = sorted(
            (rank, p.name, p) for p in dest.glob("*.whl")
            if (rank := wheel_rank(p.name, dist, version, platform)) is not None
        )
        if not ranked:
            raise SystemExit(f"No wheel of {req} for {platform} in {dest}.")
        chosen.append(ranked[0][2])
    return chosen


def check_hashes(files: list[Path], sums_path: Path, update: bool) -> None:
    """Compare each file's SHA-256 with ``sums_path`` (``<sha256>  <file name>`` lines).

    With ``update``, record the hashes of files not listed yet instead of failing on them.
    """
    known = {}
    if sums_path.exists():
        for line in sums_path.read_text().splitlines():
            digest, name = line.split()
            known[name] = digest
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.name not in known and update:
            known[path.name] = digest
        elif known.get(path.name) != digest:
            raise SystemExit(
                f"{path.name}: SHA-256 {digest} is not the one in {sums_path} "
                f"({known.get(path.name, 'not listed')}); run with --update-hashes only after "
                "checking a pin change."
            )
    if update:
        sums_path.write_text("".join(f"{known[n]}  {n}\n" for n in sorted(known)))


def stage_extension(source: Path, stage: Path, wheels: list[Path], platforms: list[str]) -> Path:
    """Copy the extension to ``stage`` with ``wheels`` under ``wheels/`` and a manifest that
    lists them and ``platforms``. Returns ``stage``."""
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(source, stage, ignore=_STAGE_IGNORE)
    (stage / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, stage / "wheels" / wheel.name)
    manifest = stage / "blender_manifest.toml"
    manifest.write_text(
        with_top_level_keys(
            manifest.read_text(),
            platforms=platforms,
            wheels=[f"./wheels/{w.name}" for w in sorted(wheels, key=lambda p: p.name)],
        )
    )
    return stage


def with_top_level_keys(manifest_text: str, **values: list[str]) -> str:
    """Set top-level list keys of a TOML manifest (replacing them if present).

    Text-level, because Python has no TOML writer; the result is re-read to check it.
    """
    text = manifest_text
    for key in values:
        text = re.sub(rf"(?ms)^{key}\s*=\s*\[.*?\]\s*\n", "", text)
    lines = "".join(
        f"{key} = [\n" + "".join(f'  "{v}",\n' for v in vals) + "]\n"
        for key, vals in values.items() if vals
    )
    first_table = re.search(r"(?m)^\[", text)
    cut = first_table.start() if first_table else len(text)
    text = text[:cut] + lines + "\n" + text[cut:]
    parsed = tomllib.loads(text)
    for key, vals in values.items():
        assert parsed.get(key, []) == vals, f"manifest rewrite lost {key}"
    return text


def build_zips(blender_ext: Path, stage: Path, out: Path, split_platforms: bool = True) -> list[Path]:
    """Run Blender's builder on ``stage``; returns the zips it wrote into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = tomllib.loads((stage / "blender_manifest.toml").read_text())
    prefix = f"{manifest['id']}-{manifest['version']}"
    for old in out.glob(f"{prefix}*.zip"):
        old.unlink()
    cmd = [sys.executable, str(blender_ext), "build", "--source-dir", str(stage),
           "--output-dir", str(out)]
    subprocess.run(cmd + (["--split-platforms"] if split_platforms else []), check=True)
    return sorted(out.glob(f"{prefix}*.zip"))


def validate_zip(blender_ext: Path, zip_path: Path) -> None:
    """Blender's ``validate`` on a built zip; raises CalledProcessError when it is refused."""
    subprocess.run([sys.executable, str(blender_ext), "validate", str(zip_path)], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platforms", default=",".join(PLATFORM_TAGS))
    parser.add_argument("--torch-bundle", action="store_true",
                        help="also bundle the CPU build of torch (about 200 MB per platform)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist")
    parser.add_argument("--update-hashes", action="store_true",
                        help="record hashes of wheels not yet in wheels/SHA256SUMS")
    args = parser.parse_args(argv)
    platforms = args.platforms.split(",")
    unknown = sorted(set(platforms) - set(PLATFORM_TAGS))
    if unknown:
        raise SystemExit(f"Unknown platform(s) {unknown}; known: {sorted(PLATFORM_TAGS)}.")

    reqs = read_requirements(REPO_ROOT / "wheels" / "requirements.txt")
    if args.torch_bundle:
        reqs += read_requirements(REPO_ROOT / "wheels" / "requirements-torch.txt")
    blender_ext = find_blender_ext()
    downloads = REPO_ROOT / "build" / "wheels"
    wheels: list[Path] = []
    for platform in platforms:
        chosen = download(reqs, platform, downloads)
        print(f"{platform}: " + ", ".join(p.name for p in chosen))
        wheels += [p for p in chosen if p not in wheels]
    check_hashes(wheels, REPO_ROOT / "wheels" / "SHA256SUMS", args.update_hashes)

    stage = stage_extension(REPO_ROOT, REPO_ROOT / "build" / "stage", wheels, platforms)
    out = args.out / ("torch" if args.torch_bundle else "")
    for zip_path in build_zips(blender_ext, stage, out):
        validate_zip(blender_ext, zip_path)
        print(f"{zip_path.relative_to(REPO_ROOT) if zip_path.is_relative_to(REPO_ROOT) else zip_path}"
              f": {zip_path.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

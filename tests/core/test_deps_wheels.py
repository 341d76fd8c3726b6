"""wheels/: the lock is complete and numpy-free, and the build script's offline parts work.

The download itself needs network (``make zips``); here the committed lock is checked for
consistency (every platform gets exactly one file per pinned package, each with a hash), and the
manifest rewrite, wheel choice and hash check run on real file names and files.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from wheels import build

WHEELS_DIR = build.REPO_ROOT / "wheels"
LOCKS = ("requirements.txt", "requirements-torch.txt")


def _sums() -> dict[str, str]:
    lines = (WHEELS_DIR / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines)}


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_every_package_and_never_numpy(lock):
    reqs = build.read_requirements(WHEELS_DIR / lock)
    assert reqs and all(r.count("==") == 1 for r in reqs)
    assert not [r for r in reqs if build.normalize(r.split("==")[0]) in build.FORBIDDEN]


@pytest.mark.parametrize("platform", sorted(build.PLATFORM_TAGS))
@pytest.mark.parametrize("lock", LOCKS)
def test_lock_has_a_hashed_wheel_per_package_and_platform(lock, platform):
    names = list(_sums())
    for req in build.read_requirements(WHEELS_DIR / lock):
        dist, version = req.split("==")
        if dist == "torch":
            version += build.TORCH_LOCAL_VERSION.get(platform, "")
        ranks = [build.wheel_rank(n, dist, version, platform) for n in names]
        assert sum(r is not None for r in ranks) >= 1, f"no {req} wheel hashed for {platform}"


def test_every_hashed_wheel_serves_some_platform():
    reqs = [r for lock in LOCKS for r in build.read_requirements(WHEELS_DIR / lock)]
    for name in _sums():
        assert any(
            build.wheel_rank(name, r.split("==")[0],
                             r.split("==")[1] + (build.TORCH_LOCAL_VERSION.get(p, "")
                                                 if r.startswith("torch==") else ""), p)
            is not None
            for r in reqs for p in build.PLATFORM_TAGS
        ), f"{name} is hashed but no pinned package/platform uses it"


def test_numpy_requirement_is_refused(tmp_path):
    for line in ("numpy==1.26.4", "NumPy>=1.0", "numpy ; python_version>'3'"):
        path = tmp_path / "req.txt"
        path.write_text(f"scipy==1.17.1\n{line}\n")
        with pytest.raises(SystemExit, match="numpy"):
            build.read_requirements(path)


def test_wheel_rank_prefers_the_oldest_macos_and_rejects_others():
    scipy12 = "scipy-1.17.1-cp311-cp311-macosx_12_0_arm64.whl"
    scipy14 = "scipy-1.17.1-cp311-cp311-macosx_14_0_arm64.whl"
    r12 = build.wheel_rank(scipy12, "scipy", "1.17.1", "macos-arm64")
    r14 = build.wheel_rank(scipy14, "scipy", "1.17.1", "macos-arm64")
    assert r12 is not None and r14 is not None and r12 < r14
    assert build.wheel_rank(scipy12, "scipy", "1.17.0", "macos-arm64") is None
    assert build.wheel_rank(scipy12, "scipy", "1.17.1", "linux-x64") is None
    assert build.wheel_rank("typing_extensions-4.16.0-py3-none-any.whl", "typing-extensions",
                            "4.16.0", "windows-x64") == 0
    multi = "pillow-13.0.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    assert build.wheel_rank(multi, "Pillow", "13.0.0", "linux-x64") == 0


def test_manifest_rewrite_keeps_everything_else():
    text = (build.REPO_ROOT / "blender_manifest.toml").read_text()
    wheels = ["./wheels/a-1.0-py3-none-any.whl", "./wheels/b-2.0-cp311-cp311-win_amd64.whl"]
    new = tomllib.loads(build.with_top_level_keys(text, platforms=["windows-x64"], wheels=wheels))
    old = tomllib.loads(text)
    assert new["platforms"] == ["windows-x64"] and new["wheels"] == wheels
    assert {k: v for k, v in new.items() if k not in ("platforms", "wheels")} == {
        k: v for k, v in old.items() if k not in ("platforms", "wheels")
    }
    again = tomllib.loads(build.with_top_level_keys(
        build.with_top_level_keys(text, platforms=["linux-x64"], wheels=wheels),
        platforms=["macos-arm64"], wheels=wheels[:1]))
    assert again["platforms"] == ["macos-arm64"] and again["wheels"] == wheels[:1]


def test_hash_check_refuses_a_changed_file_and_records_new_ones(tmp_path):
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    wheel.write_bytes(b"one")
    sums = tmp_path / "SHA256SUMS"
    build.check_hashes([wheel], sums, update=True)
    assert sums.read_text() == f"{hashlib.sha256(b'one').hexdigest()}  {wheel.name}\n"
    build.check_hashes([wheel], sums, update=False)
    wheel.write_bytes(b"two")
    with pytest.raises(SystemExit, match="is not the one in"):
        build.check_hashes([wheel], sums, update=True)  # a listed file never gets re-hashed
    other = Path(tmp_path / "y-1.0-py3-none-any.whl")
    other.write_bytes(b"new")
    with pytest.raises(SystemExit, match="not listed"):
        build.check_hashes([other], sums, update=False)

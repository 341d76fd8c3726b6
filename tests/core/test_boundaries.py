"""Architecture rules: core never imports bpy; Blender's process never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BLENDER_SIDE_MODULES = [  # every core module that operators/, ui/ or __init__.py import
    "core.errors",
    "core.progress",
    "core.config",
    "core.result",
    "core.predictions",
    "core.backends",
    "core.job",
    "core.worker",
    "core.masks",
    "core.metrics",
    "core.checkpoints",
    "core.deps",
    "core.geometry.conventions",
    "core.dust3r.download",
    "core.dust3r.registry",
    "core.blocking.animation",
    "core.blocking.colmap",
    "core.blocking.level",
    "core.blocking.nerf",
    "core.blocking.planes",
    "core.blocking.ply",
    "core.blocking.scale",
    "core.blocking.transform",
]


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_never_imports_blender_modules():
    offenders = {
        str(p.relative_to(REPO_ROOT)): sorted(_imported_roots(p) & {"bpy", "mathutils", "bmesh"})
        for p in (REPO_ROOT / "core").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_uses_relative_imports_for_itself():
    offenders = [
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "core").rglob("*.py")
        if "core" in _imported_roots(p)
    ]
    assert offenders == []


@pytest.mark.parametrize("module", BLENDER_SIDE_MODULES)
def test_blender_side_modules_do_not_load_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)

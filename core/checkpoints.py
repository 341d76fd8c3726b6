"""The weights folder: which released checkpoints it holds, and adding a file the user already has.

Torch-free (Blender's process uses it). Checking what a file is needs torch, so
:func:`identify` loads the file with the worker's own loader (:func:`.dust3r.weights.load_model`:
restricted unpickling, strict key and shape check) in the worker's interpreter, in a child
process. A file of the wrong kind is refused by name; nothing is copied until it passed.

Layout of the weights folder (what ``ensure_weights`` downloads and the panel's search finds):
``<name>.pth`` for an official ``.pth``, ``<name>/model.safetensors`` (+ ``config.json``) for
the Hugging Face form.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .deps import worker_env
from .dust3r.download import weights_file
from .dust3r.registry import WEIGHTS, WeightsInfo
from .errors import DependencyError, WeightsError
from .job import EXTENSION_ROOT

log = logging.getLogger(__name__)

IDENTIFY_TIMEOUT_S = 600.0

_IDENTIFY_SCRIPT = r"""
import json, sys
try:
    from core.dust3r.weights import load_model, preset_name
except ImportError as exc:
    print(json.dumps({"type": "DependencyError", "message": str(exc)}))
    raise SystemExit(0)
from core.errors import WeightsError
try:
    model = load_model(sys.argv[1])
except WeightsError as exc:
    print(json.dumps({"type": "WeightsError", "message": str(exc)}))
else:
    print(json.dumps({"preset": preset_name(model.config)}))
"""


@dataclass(frozen=True)
class CheckpointStatus:
    """One released checkpoint in the weights folder.

    Attributes:
        info: the registry entry (name, size, licence, URLs).
        path: the file found, or None.
        size_bytes: its size on disk (0 when absent).
        partial_bytes: size of an interrupted download (``.part``) waiting to resume, else 0.
    """

    info: WeightsInfo
    path: Path | None
    size_bytes: int = 0
    partial_bytes: int = 0


def safetensors_file(info: WeightsInfo, folder: str | Path) -> Path:
    """Where the Hugging Face form of ``info`` lives in the weights folder."""
    return Path(folder) / info.name / "model.safetensors"


def folder_status(folder: str | Path) -> list[CheckpointStatus]:
    """Every released checkpoint (registry order) with what ``folder`` holds of it."""
    out = []
    for info in WEIGHTS.values():
        found = next(
            (p for p in (weights_file(info, folder), safetensors_file(info, folder)) if p.is_file()),
            None,
        )
        part = weights_file(info, folder).with_name(info.pth_file + ".part")
        out.append(CheckpointStatus(
            info, found, found.stat().st_size if found else 0,
            part.stat().st_size if part.is_file() else 0,
        ))
    return out


def identify(path: str | Path, python: str, extra_paths: Sequence[str] = ()) -> str | None:
    """Load ``path`` as the worker would and return its preset (``"512_dpt"``...), or None for a
    DUSt3R checkpoint of another size.

    Raises:
        WeightsError: not a loadable DUSt3R checkpoint (the loader's reason, naming the file).
        DependencyError: the worker's Python cannot load checkpoints (no torch) or did not run.
    """
    cmd = [python, "-c", _IDENTIFY_SCRIPT, str(path)]
    env = worker_env([str(EXTENSION_ROOT), *extra_paths])
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=IDENTIFY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DependencyError(f"Cannot run {python} to check {path}: {exc}") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise DependencyError(f"Checking {path} with {python} failed (exit code "
                              f"{proc.returncode}): {proc.stderr.strip()[-500:]}")
    answer = json.loads(lines[-1])
    if answer.get("type") == "WeightsError":
        raise WeightsError(answer["message"])
    if answer.get("type") == "DependencyError":
        raise DependencyError(
            f"Checking a checkpoint needs torch in the worker's Python ({answer['message']}). "
            "Install PyTorch in the extension preferences first."
        )
    return answer["preset"]


def check_kind(preset: str | None, info: WeightsInfo, source: str | Path) -> None:
    """Refuse ``source`` unless its ``preset`` is the architecture of ``info``.

    Raises:
        WeightsError: naming the file, what it is and what was expected.
    """
    if preset == info.preset:
        return
    if preset is None:
        raise WeightsError(f"{source} is a DUSt3R checkpoint of a size that is not one of the "
                           f"released models, not {info.name}.")
    actual = next(w.name for w in WEIGHTS.values() if w.preset == preset)
    raise WeightsError(f"{source} is the {actual} checkpoint, not {info.name}. Locate it on the "
                       f"{actual} line instead.")


def place(
    source: str | Path,
    info: WeightsInfo,
    folder: str | Path,
    python: str,
    extra_paths: Sequence[str] = (),
    link: bool = False,
) -> Path:
    """Check that ``source`` is ``info``'s checkpoint and put it where the worker finds it.

    Args:
        source: a ``.pth`` file, a ``model.safetensors`` (its ``config.json`` beside it goes
            along), or a folder holding ``model.safetensors``.
        link: symbolic link instead of a copy (saves 2 GB; falls back to a copy where links are
            not allowed, e.g. Windows without developer mode).

    Returns:
        The checkpoint's path in ``folder``.

    Raises:
        WeightsError: missing file, not a DUSt3R checkpoint, or another model (named).
        DependencyError: the worker's Python cannot load checkpoints.
    """
    source = Path(source)
    if source.is_dir():
        source = source / "model.safetensors"
    if not source.is_file():
        raise WeightsError(f"{source} does not exist.")
    check_kind(identify(source, python, extra_paths), info, source)
    if source.suffix == ".safetensors":
        target = safetensors_file(info, folder)
        companions = [source.with_name("config.json")]
    else:
        target, companions = weights_file(info, folder), []
    target.parent.mkdir(parents=True, exist_ok=True)
    for src in [source, *[c for c in companions if c.is_file()]]:
        _put(src.resolve(), target.with_name(target.name if src == source else src.name), link)
    log.info("placed %s as %s", source, target)
    return target


def _put(src: Path, dst: Path, link: bool) -> None:
    """Copy or link ``src`` to ``dst`` atomically (a partial copy never has the final name)."""
    if dst.exists() and dst.resolve() == src:
        return  # already there
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    if link:
        try:
            os.symlink(src, tmp)
        except OSError:
            link = False
    if not link:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)

"""A backend that returns a saved reconstruction (re-import, tests, results made elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import JobConfig, strict_fields
from .errors import InputError
from .progress import Progress
from .result import SceneResult


@dataclass(frozen=True)
class ResultFileOptions:
    """Options of the ``result_file`` backend.

    Attributes:
        path: a result folder written by :meth:`SceneResult.save` (``result.json`` + ``result.npz``).
    """

    path: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultFileOptions:
        opts = cls(**strict_fields(cls, d, "result_file backend"))
        if not opts.path:
            raise InputError("The result_file backend needs options['path'], a saved result folder.")
        return opts


def run(job: JobConfig, progress: Progress) -> SceneResult:
    """Load ``job.options["path"]``.

    Raises:
        InputError: no path given, or it is not a folder.
        FormatError: the folder does not hold a readable result of this format version.
    """
    opts = ResultFileOptions.from_dict(job.options)
    if not Path(opts.path).is_dir():
        raise InputError(f"Result folder {opts.path} does not exist; pick a saved result folder.")
    progress("loading result", 0.0, f"reading {opts.path}")
    result = SceneResult.load(opts.path)
    progress("loading result", 1.0, f"{len(result.images)} camera(s)")
    return result

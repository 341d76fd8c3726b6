"""Backends behind one interface.

Each backend is a module with ``run(job: JobConfig, progress: Progress) -> SceneResult``. Modules
are imported lazily, so importing this file pulls in neither torch nor pycolmap; only the worker
(or a headless script) that actually runs a backend pays for its imports.

| name          | module                  | what it does                                           |
|---------------|-------------------------|--------------------------------------------------------|
| classical     | ``classical.backend``   | SIFT SfM (pycolmap) + our dense MVS; no learned weights |
| dust3r        | ``dust3r.backend``      | DUSt3R pairwise network + global alignment             |
| synthetic     | ``synthetic``           | a procedurally generated scene with exact cameras      |
| result_file   | ``result_file``         | re-loads a saved result (re-import, tests)             |
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .config import JobConfig

if TYPE_CHECKING:
    from .progress import Progress
    from .result import SceneResult

_MODULES = {
    "classical": ".classical.backend",
    "dust3r": ".dust3r.backend",
    "synthetic": ".synthetic",
    "result_file": ".result_file",
}


def run_backend(job: JobConfig, progress: Progress) -> SceneResult:
    """Run ``job`` with the backend it names and return its result."""
    module = importlib.import_module(_MODULES[job.backend], __package__)
    return module.run(job, progress)

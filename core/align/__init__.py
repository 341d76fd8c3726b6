"""Global alignment of DUSt3R pairwise pointmaps (torch).

``align(preds, options, progress) -> SceneResult``. Modules: :mod:`.options` (settings),
:mod:`.observations` (flat sampled inputs), :mod:`.graph` (connectivity, spanning tree),
:mod:`.init` (spanning-tree initialisation), :mod:`.procrustes`, :mod:`.focal`, :mod:`.resection`
(closed-form fits), :mod:`.model` (parameters), :mod:`.depth` (closed-form depths),
:mod:`.loss`, :mod:`.optimize`, :mod:`.clean` (visibility clean-up), :mod:`.pipeline` (all of it).
"""

from __future__ import annotations

from .options import AlignOptions

__all__ = ["AlignOptions", "align"]


def __getattr__(name: str):
    """``align`` is imported on first use: it needs torch, the options do not (the worker checks
    a job's per-photo options before any backend runs, also for backends without torch)."""
    if name == "align":
        from .pipeline import align

        globals()["align"] = align
        return align
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

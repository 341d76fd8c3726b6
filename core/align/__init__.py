"""Global alignment of DUSt3R pairwise pointmaps (torch).

``align(preds, options, progress) -> SceneResult``. Modules: :mod:`.options` (settings),
:mod:`.observations` (flat sampled inputs), :mod:`.graph` (connectivity, spanning tree),
:mod:`.init` (spanning-tree initialisation), :mod:`.procrustes`, :mod:`.focal`, :mod:`.resection`
(closed-form fits), :mod:`.model` (parameters), :mod:`.depth` (closed-form depths),
:mod:`.loss`, :mod:`.optimize`, :mod:`.clean` (visibility clean-up), :mod:`.pipeline` (all of it).
"""

from __future__ import annotations

from .options import AlignOptions
from .pipeline import align

__all__ = ["AlignOptions", "align"]

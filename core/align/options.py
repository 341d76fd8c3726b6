"""Options of the global alignment (a frozen dataclass, checked strictly)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import strict_fields
from ..errors import InputError

PER_PHOTO_OPTIONS = ("known_focals", "known_intrinsics", "known_poses")
"""Options that are lists of one entry per input photo (``None``/null where unknown)."""

OPTIMIZERS = ("lbfgs", "adam")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class AlignOptions:
    """How to align the pairwise pointmaps.

    Attributes:
        iterations: most optimiser iterations (0: the initialisation is the answer; two images
            are never optimised, as the reference's pair viewer).
        optimizer: ``"lbfgs"`` (default: converges in tens of iterations) or ``"adam"``.
        lr: step size: L-BFGS's initial step (default 1) or Adam's learning rate (default 0.01).
        schedule: Adam's learning-rate schedule ``cosine`` | ``linear`` | ``constant`` (towards
            ``lr * 1e-4``); L-BFGS ignores it.
        opt_pixels: pixels per image used while optimising cameras: each pointmap is pooled
            (median) over square blocks to about this many; the depth maps are then solved at
            full resolution. 0 = every pixel.
        shared_focal: one focal length for all images whose focal is not given.
        known_focals: per input image the focal length in pixels of the ORIGINAL photo, or None.
        known_intrinsics: per input image a 3x3 K in pixels of the ORIGINAL photo (fx may differ
            from fy), or None. Wins over ``known_focals``.
        known_poses: per input image a 4x4 camera-to-world (OpenCV axes) or None. With two or more
            the scene is in their units.
        optimize_pp: optimise the principal point (else fixed at ``(W/2, H/2)`` on the map grid,
            as the network was trained, or at the given intrinsics).
        clean_depth: zero the confidence of points that lie in front of a more confident view's
            surface (the reference's visibility test).
        conf_threshold: default raw-confidence threshold suggested with the result.
        base_scale: geometric mean that the pairwise scales are pinned to (the reference's 0.5).
    """

    iterations: int = 100
    optimizer: str = "lbfgs"
    lr: float | None = None
    schedule: str = "cosine"
    opt_pixels: int = 2048
    shared_focal: bool = False
    known_focals: tuple[float | None, ...] | None = None
    known_intrinsics: tuple[Any, ...] | None = None
    known_poses: tuple[Any, ...] | None = None
    optimize_pp: bool = False
    clean_depth: bool = True
    conf_threshold: float = 3.0
    base_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise InputError(f"Alignment iterations must be >= 0, got {self.iterations}.")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"Unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}.")
        if self.schedule not in SCHEDULES:
            raise InputError(f"Unknown schedule {self.schedule!r}; choose one of {SCHEDULES}.")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"Alignment lr must be > 0, got {self.lr}.")
        if self.opt_pixels < 0:
            raise InputError(f"opt_pixels must be >= 0, got {self.opt_pixels}.")
        if not self.base_scale > 0:
            raise InputError(f"base_scale must be > 0, got {self.base_scale}.")
        for name, shape in (("known_intrinsics", (3, 3)), ("known_poses", (4, 4))):
            values = getattr(self, name)
            if values is None:
                continue
            for k, m in enumerate(values):
                if m is not None and (np.shape(m) != shape or not np.isfinite(m).all()):
                    raise InputError(f"{name}[{k}] must be a finite {shape[0]}x{shape[1]} matrix "
                                     f"or null.")
        for k, K in enumerate(self.known_intrinsics or ()):
            if K is not None and not (K[0][0] > 0 and K[1][1] > 0):
                raise InputError(f"known_intrinsics[{k}] must have positive focal lengths "
                                 f"(fx = K[0][0], fy = K[1][1]), got {K[0][0]} and {K[1][1]}.")
        for k, f in enumerate(self.known_focals or ()):
            if f is not None and not (np.isfinite(f) and f > 0):
                raise InputError(f"known_focals[{k}] must be a positive number or null, got {f}.")

    @property
    def step_size(self) -> float:
        """``lr``, or the optimiser's default."""
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.01

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlignOptions:
        """Build from plain JSON values; unknown keys raise :class:`InputError`."""
        d = dict(strict_fields(cls, d, "alignment"))
        for name in ("known_focals", "known_intrinsics", "known_poses"):
            if d.get(name) is not None:
                d[name] = tuple(d[name])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (matrices as nested lists)."""
        d = dataclasses.asdict(self)
        for name in ("known_intrinsics", "known_poses"):
            if d[name] is not None:
                d[name] = [None if m is None else np.asarray(m, float).tolist() for m in d[name]]
        if d["known_focals"] is not None:
            d["known_focals"] = list(d["known_focals"])
        return d

    def check_photo_count(self, n_photos: int) -> None:
        """Refuse per-photo lists (:data:`PER_PHOTO_OPTIONS`) without one entry per photo.

        Raises:
            InputError: e.g. ``known_focals has 2 entries for 4 photos``.
        """
        check_photo_lists({name: getattr(self, name) for name in PER_PHOTO_OPTIONS},
                          n_photos)

    def for_images(self, keep: list[int]) -> AlignOptions:
        """These options with the per-image lists restricted to input images ``keep``.

        Raises:
            InputError: a list has no entry for one of ``keep`` (too short).
        """
        changes = {}
        for name in PER_PHOTO_OPTIONS:
            values = getattr(self, name)
            if values is not None:
                if keep and max(keep) >= len(values):
                    raise InputError(f"{name} has {len(values)} entries, none for photo "
                                     f"{max(keep) + 1}; give one entry per photo (null where "
                                     "unknown).")
                changes[name] = tuple(values[k] for k in keep)
        return dataclasses.replace(self, **changes)


def check_photo_lists(options: dict[str, Any], n_photos: int) -> None:
    """Refuse per-photo lists of ``options`` (plain job options) of another length than
    ``n_photos``: a short list would silently apply to the first photos only.

    Raises:
        InputError: e.g. ``known_focals has 2 entries for 4 photos``.
    """
    for name in PER_PHOTO_OPTIONS:
        values = options.get(name)
        if values is not None and len(values) != n_photos:
            raise InputError(f"{name} has {len(values)} entries for {n_photos} photos; give one "
                             "entry per photo, in the order of the photos (null where unknown).")


def restrict_photo_lists(options: dict[str, Any], n_photos: int, keep: list[int]
                         ) -> dict[str, Any]:
    """Job options whose per-photo lists, given for ``n_photos`` input photos, follow only the
    photos ``keep`` (indices of the input photos that remain, in order).

    Raises:
        InputError: a list without one entry per input photo (:func:`check_photo_lists`).
    """
    check_photo_lists(options, n_photos)
    out = dict(options)
    for name in PER_PHOTO_OPTIONS:
        if out.get(name) is not None:
            out[name] = [out[name][k] for k in keep]
    return out

"""Progress reporting and cooperative cancellation.

Long computations take a :class:`Progress` and call it at natural boundaries (per batch, per
optimiser step, per image). Each call reports and then raises :class:`~.errors.Cancelled` if a
cancel was requested, so cancellation needs no extra code at the call sites.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import Cancelled

ProgressCallback = Callable[[str, float, str], None]
"""``callback(stage, fraction, message)``; ``fraction`` is the overall job fraction in [0, 1]."""


class CancelToken:
    """A cancel flag, optionally backed by a file so another process can set it.

    Args:
        cancel_file: if given, the token counts as cancelled as soon as this file exists
            (the Blender side creates it to cancel a worker).
    """

    def __init__(self, cancel_file: str | os.PathLike | None = None) -> None:
        self._cancelled = False
        self._file = Path(cancel_file) if cancel_file is not None else None

    def cancel(self) -> None:
        self._cancelled = True
        if self._file is not None:
            self._file.touch()

    @property
    def cancelled(self) -> bool:
        if not self._cancelled and self._file is not None and self._file.exists():
            self._cancelled = True
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("Cancelled by the user.")


class Progress:
    """Reports progress of one job and checks for cancellation.

    Args:
        callback: receives ``(stage, fraction, message)``; ``None`` reports nothing.
        cancel: the job's cancel token; ``None`` means the job cannot be cancelled.
        lo, hi: this reporter's share of the overall job; a ``fraction`` of 0..1 passed to
            :meth:`__call__` is mapped to ``lo..hi``. Use :meth:`sub` to hand a part of the job
            to a sub-step.
    """

    def __init__(
        self,
        callback: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        lo: float = 0.0,
        hi: float = 1.0,
    ) -> None:
        self.callback = callback
        self.cancel = cancel if cancel is not None else CancelToken()
        self.lo, self.hi = lo, hi

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1 of this reporter's share) of ``stage``, then check cancel."""
        if self.callback is not None:
            f = min(max(float(fraction), 0.0), 1.0)
            self.callback(stage, self.lo + (self.hi - self.lo) * f, message)
        self.cancel.raise_if_cancelled()

    def check(self) -> None:
        """Raise :class:`~.errors.Cancelled` if cancel was requested; reports nothing."""
        self.cancel.raise_if_cancelled()

    def sub(self, lo: float, hi: float) -> Progress:
        """A reporter for the part ``lo..hi`` (fractions of this reporter's share)."""
        span = self.hi - self.lo
        return Progress(self.callback, self.cancel, self.lo + span * lo, self.lo + span * hi)

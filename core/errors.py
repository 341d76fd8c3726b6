"""Error hierarchy shared by the core, the worker and the Blender operators.

Every error a user can cause or meet derives from :class:`ReconstructionError`; its message is
shown verbatim in Blender, so it names the problem and what to do about it.
"""

from __future__ import annotations


class ReconstructionError(Exception):
    """Base class: a failure with a message meant for the user."""


class InputError(ReconstructionError):
    """Unusable input: unreadable images, too few images, a bad option value."""


class WeightsError(ReconstructionError):
    """Missing, truncated, wrong or foreign model weights."""


class FormatError(ReconstructionError):
    """A file in one of our formats is malformed or of another format version."""


class OutOfMemoryError(ReconstructionError):
    """The device ran out of memory; the message suggests a smaller graph or resolution."""


class Cancelled(ReconstructionError):
    """The user cancelled the job."""


class WorkerError(ReconstructionError):
    """The worker process crashed, was killed or exited without a result."""


class ReconstructionFailed(ReconstructionError):
    """The method ran but could not reconstruct the scene (too few matches, nothing registered)."""


class DependencyError(ReconstructionError):
    """A Python package is missing or could not be installed (the message names the log file)."""


ERROR_TYPES: dict[str, type[ReconstructionError]] = {
    cls.__name__: cls
    for cls in (
        ReconstructionError,
        InputError,
        WeightsError,
        FormatError,
        OutOfMemoryError,
        Cancelled,
        WorkerError,
        ReconstructionFailed,
        DependencyError,
    )
}
"""Name -> class, used to re-raise an error that crossed the worker boundary as JSON."""

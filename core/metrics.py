"""Camera errors of a reconstruction against ground truth (``gt.json`` of the test scenes).

The reconstruction's world frame and scale are arbitrary, so only gauge-free quantities are
compared, for every pair of photos present in both:

* relative rotation error: angle of ``R_ij_est^T R_ij_gt`` where ``R_ij = R_i^T R_j`` is the
  rotation from camera j to camera i (``R`` = camera-to-world rotation);
* relative translation direction error: angle between the unit directions from camera i to
  camera j expressed in camera i's frame (scale-free);
* focal error per photo: ``|f_est - f_gt| / f_gt`` in photo pixels, for fx and fy.

``gt.json`` format (``shared/scenes/MANIFEST.md``): ``frames`` with ``file``, ``width``,
``height``, ``fx``, ``fy``, ``cx``, ``cy``, ``R_w2c`` (3x3), ``t_w2c`` (3), OpenCV axes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FormatError, InputError
from .result import SceneResult


@dataclass(frozen=True)
class TrueCamera:
    """One ground-truth camera: ``K_photo`` (3, 3) float64 pixels, ``cam2world`` (4, 4) float64
    OpenCV axes, ``photo_size`` (W, H)."""

    K_photo: np.ndarray
    cam2world: np.ndarray
    photo_size: tuple[int, int]


@dataclass(frozen=True)
class CameraErrors:
    """Errors of the cameras found in both the result and the truth.

    Attributes:
        files: names of the compared photos (file names without folder).
        rotation_deg: ``(P,)`` relative rotation errors in degrees, one per photo pair.
        translation_deg: ``(P,)`` relative translation direction errors in degrees.
        focal_rel: ``(N, 2)`` relative fx, fy errors per photo.
        missing: true photos absent from the result (not registered).
    """

    files: tuple[str, ...]
    rotation_deg: np.ndarray
    translation_deg: np.ndarray
    focal_rel: np.ndarray
    missing: tuple[str, ...]

    def summary(self) -> str:
        """A few lines for a terminal: counts, median and max of each error."""
        def stats(values: np.ndarray, scale: float, unit: str) -> str:
            if values.size == 0:
                return "n/a (fewer than 2 cameras)"
            return f"median {np.median(values) * scale:.3g}{unit}, max {values.max() * scale:.3g}{unit}"

        return "\n".join([
            f"cameras compared: {len(self.files)} (missing from the result: {len(self.missing)})",
            f"relative rotation error: {stats(self.rotation_deg, 1, ' deg')}",
            f"relative translation direction error: {stats(self.translation_deg, 1, ' deg')}",
            f"focal length error: {stats(self.focal_rel, 100, ' %')}",
        ])


def load_truth(path: str | Path) -> dict[str, TrueCamera]:
    """Ground-truth cameras of ``gt.json`` keyed by photo file name (without folder).

    Raises:
        FormatError: unreadable file or a frame without the camera keys.
    """
    try:
        frames = json.loads(Path(path).read_text())["frames"]
        truth = {}
        for frame in frames:
            R_w2c = np.array(frame["R_w2c"], float)
            t_w2c = np.array(frame["t_w2c"], float)
            cam2world = np.eye(4)
            cam2world[:3, :3] = R_w2c.T
            cam2world[:3, 3] = -R_w2c.T @ t_w2c
            K = np.array([[frame["fx"], 0, frame["cx"]], [0, frame["fy"], frame["cy"]], [0, 0, 1]], float)
            truth[Path(frame["file"]).name] = TrueCamera(K, cam2world, (frame["width"], frame["height"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"Cannot read ground-truth cameras from {path}: {exc!r}") from exc
    return truth


def _angle_deg(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _relative_motions(cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For all pairs i < j of ``(N, 4, 4)`` cameras: ``(P, 3, 3)`` rotations ``R_i^T R_j`` and
    ``(P, 3)`` unit directions from centre i to centre j in camera i's frame."""
    i, j = np.triu_indices(len(cam2world), k=1)
    R, C = cam2world[:, :3, :3], cam2world[:, :3, 3]
    R_ij = np.einsum("pba,pbc->pac", R[i], R[j])
    d_ij = np.einsum("pba,pb->pa", R[i], C[j] - C[i])
    d_ij /= np.linalg.norm(d_ij, axis=1, keepdims=True)
    return R_ij, d_ij


def camera_errors(result: SceneResult, truth: dict[str, TrueCamera]) -> CameraErrors:
    """Compare the result's cameras with ``truth`` (see the module docstring).

    Raises:
        InputError: no photo of the result is in the truth.
    """
    matched = [im for im in result.images if Path(im.file).name in truth]
    if not matched:
        raise InputError("None of the reconstructed photos is in the ground truth file; "
                         "check that it belongs to this photo folder.")
    files = tuple(Path(im.file).name for im in matched)
    gt = [truth[f] for f in files]
    est_c2w = np.stack([np.asarray(im.cam2world, float) for im in matched])
    gt_c2w = np.stack([t.cam2world for t in gt])
    R_est, d_est = _relative_motions(est_c2w)
    R_gt, d_gt = _relative_motions(gt_c2w)
    # angle of R_est^T R_gt from its trace
    rotation = _angle_deg((np.einsum("pab,pab->p", R_est, R_gt) - 1.0) / 2.0)
    translation = _angle_deg(np.einsum("pa,pa->p", d_est, d_gt))
    focal = []
    for im, t in zip(matched, gt):
        # A truth file for resized photos scales K with the image.
        scale = np.array(im.photo_size, float) / np.array(t.photo_size, float)
        f_est = np.diag(np.asarray(im.K_photo, float))[:2]
        f_gt = np.diag(t.K_photo)[:2] * scale
        focal.append(np.abs(f_est - f_gt) / f_gt)
    missing = tuple(sorted(set(truth) - set(files)))
    return CameraErrors(files, rotation, translation, np.array(focal).reshape(-1, 2), missing)


def pose_accuracy(errors: CameraErrors, registered_only: bool = False) -> dict[str, float]:
    """RRA@15, RTA@15 and mAA(30) as in the DUSt3R/PoseDiffusion protocol (``MANIFEST.md``).

    Scores are fractions of all pairs of the truth's photos; a pair with a photo missing from the
    result counts as a failure unless ``registered_only``. The translation error is taken
    sign-ambiguous there (``min(e, 180 - e)``), as the protocol does; a NaN error is a failure.

    Returns:
        ``{"RRA@15", "RTA@15", "mAA(30)"}``: fractions in [0, 1] (NaN with fewer than 2 photos).
    """
    n = len(errors.files) + (0 if registered_only else len(errors.missing))
    pairs = n * (n - 1) // 2
    if pairs == 0:
        return {"RRA@15": float("nan"), "RTA@15": float("nan"), "mAA(30)": float("nan")}
    rotation = errors.rotation_deg
    translation = np.minimum(errors.translation_deg, 180.0 - errors.translation_deg)
    worst = np.maximum(rotation, translation)
    return {
        "RRA@15": float(np.sum(rotation < 15) / pairs),
        "RTA@15": float(np.sum(translation < 15) / pairs),
        # mean over the thresholds 1..30 degrees of the share of pairs within them
        "mAA(30)": float(np.mean([np.sum(worst < t) / pairs for t in range(1, 31)])),
    }

"""Sparse reconstruction: cameras and tie points from photos with pycolmap (COLMAP).

SIFT features, exhaustive or sequential matching with geometric verification, then incremental
mapping with bundle adjustment, all in a temporary workspace. The photos are EXIF-oriented and
(if large) downscaled into the workspace as PNG, so COLMAP sees exactly the pixels we use.

Conventions: COLMAP puts the centre of the top-left pixel at (0.5, 0.5); we put it at (0, 0), so
``c_ours = c_colmap - 0.5``. A workspace image downscaled by ``s`` (photo = s * work, pixel-centre
aware) maps back with ``u_photo = s * (u_work + 0.5) - 0.5``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap
from PIL import Image

from ..errors import Cancelled, InputError, ReconstructionFailed
from ..images import exif_camera, load_photo
from ..progress import Progress

log = logging.getLogger(__name__)

MATCHERS = ("auto", "exhaustive", "sequential")
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
INTRINSICS_MODES = ("auto", "shared", "per_image")

_MIN_SUPPORT = 30  # a pose seen by fewer sparse points is not trusted (COLMAP's PnP default)
# A registered photo must explain at least half of its verified matches within the two-view
# verification's own RANSAC tolerance (COLMAP's 4 px); right poses explain nearly all of them.
_MIN_AGREEMENT = 0.5
_AGREEMENT_ERROR_PX = 4.0


@dataclass(frozen=True)
class SfmOptions:
    """Settings of the sparse stage.

    Attributes:
        matcher: ``exhaustive`` (all pairs), ``sequential`` (ordered frames, each matched with the
            next ``sequential_overlap``), or ``auto`` (exhaustive up to ``exhaustive_max_images``).
        exhaustive_max_images: the ``auto`` switch point.
        sequential_overlap: neighbours per frame for sequential matching.
        camera_model: ``SIMPLE_PINHOLE`` (one focal) or ``PINHOLE`` (fx, fy). No lens distortion:
            the result format carries K only.
        intrinsics: ``shared`` (one camera for all photos), ``per_image``, or ``auto`` (shared when
            all photos have the same size and the same EXIF camera and focal).
        max_image_size: long side (pixels) of the copies SIFT runs on; larger photos are downscaled.
        max_features: SIFT features per image.
        min_num_matches: verified matches a pair needs to count.
        mapping_attempts: incremental mapping runs (different seeds) until all photos register.
        num_threads: CPU threads for COLMAP (-1 = all).
    """

    matcher: str = "auto"
    exhaustive_max_images: int = 60
    sequential_overlap: int = 10
    camera_model: str = "SIMPLE_PINHOLE"
    intrinsics: str = "auto"
    max_image_size: int = 1600
    max_features: int = 8192
    min_num_matches: int = 15
    mapping_attempts: int = 3
    num_threads: int = -1

    def __post_init__(self) -> None:
        for name, allowed in (
            ("matcher", MATCHERS),
            ("camera_model", CAMERA_MODELS),
            ("intrinsics", INTRINSICS_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise InputError(
                    f"Classical option {name}={getattr(self, name)!r} is not one of "
                    f"{', '.join(allowed)}."
                )
        if self.max_image_size < 64 or self.max_features < 64 or self.min_num_matches < 5:
            raise InputError(
                "Classical options max_image_size and max_features must be >= 64 and "
                "min_num_matches >= 5."
            )
        if self.mapping_attempts < 1:
            raise InputError("Classical option mapping_attempts must be >= 1.")


@dataclass
class SparseModel:
    """Cameras and tie points of the largest reconstructed model.

    Attributes:
        files: registered photos, in input order.
        photo_sizes: ``(W, H)`` of each registered photo after EXIF orientation.
        K_photo: ``(N, 3, 3)`` float64 intrinsics in photo pixels (our pixel-centre convention).
        cam2world: ``(N, 4, 4)`` float64, OpenCV camera axes.
        points: ``(M, 3)`` float64 world tie points.
        colors: ``(M, 3)`` uint8 RGB of ``points``.
        visible: per registered photo, ``(m_i,)`` int64 indices into ``points`` that it observes.
        unregistered: ``{"file", "reason"}`` for every photo that could not be placed.
        warnings: messages for the user.
    """

    files: list[str]
    photo_sizes: list[tuple[int, int]]
    K_photo: np.ndarray
    cam2world: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    visible: list[np.ndarray]
    unregistered: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _write_workspace_images(
    paths: list[str], image_dir: Path, max_image_size: int, progress: Progress
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Write EXIF-oriented, downscaled PNG copies ``00000.png, ...``; return photo, work sizes."""
    photo_sizes, work_sizes = [], []
    for k, path in enumerate(paths):
        rgb = load_photo(path)
        h, w = rgb.shape[:2]
        img = Image.fromarray(rgb)
        scale = min(1.0, max_image_size / max(w, h))
        if scale < 1.0:
            img = img.resize(
                (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS
            )
        img.save(image_dir / f"{k:05d}.png")
        photo_sizes.append((w, h))
        work_sizes.append(img.size)
        progress("features", 0.5 * (k + 1) / len(paths), f"prepared photo {k + 1}/{len(paths)}")
    return photo_sizes, work_sizes


def _use_shared_camera(
    options: SfmOptions, photo_sizes: list[tuple[int, int]], exif: list[tuple[str, float | None]]
) -> bool:
    if options.intrinsics != "auto":
        return options.intrinsics == "shared"
    return len(set(photo_sizes)) == 1 and len(set(exif)) == 1


def _set_prior_focals(
    database_path: Path,
    exif: list[tuple[str, float | None]],
    photo_sizes: list[tuple[int, int]],
    work_sizes: list[tuple[int, int]],
) -> None:
    """Put EXIF focal lengths (scaled to the workspace copies) into the database's cameras."""
    db = pycolmap.Database.open(str(database_path))
    try:
        for image in db.read_all_images():
            k = int(Path(image.name).stem)
            focal_photo = exif[k][1]
            if focal_photo is None:
                continue
            camera = db.read_camera(image.camera_id)
            focal_work = focal_photo * work_sizes[k][0] / photo_sizes[k][0]
            for idx in camera.focal_length_idxs():
                camera.params[idx] = focal_work
            camera.has_prior_focal_length = True
            db.update_camera(camera)
    finally:
        db.close()


@dataclass
class _Matches:
    """What the database knows about the photos, by photo index.

    Attributes:
        keypoints: ``(n,)`` keypoints per photo.
        inliers: ``(n, n)`` verified inlier matches per pair (symmetric).
        pairs: ``{(i, j): (m, 2) keypoint indices}`` of the inlier matches, i < j.
        xy: per photo, ``(k, 2)`` keypoint positions (COLMAP pixels of the workspace copy).
        camera_id: per photo, its database camera.
    """

    keypoints: np.ndarray
    inliers: np.ndarray
    pairs: dict[tuple[int, int], np.ndarray]
    xy: list[np.ndarray]
    camera_id: list[int]


def _pair_statistics(database_path: Path, n_images: int) -> _Matches:
    """Read features and verified matches back from the database."""
    db = pycolmap.Database.open(str(database_path))
    try:
        images = db.read_all_images()
        id_to_index = {im.image_id: int(Path(im.name).stem) for im in images}
        keypoints = np.zeros(n_images, int)
        xy = [np.zeros((0, 2))] * n_images
        camera_id = [0] * n_images
        for im in images:
            k = id_to_index[im.image_id]
            xy[k] = np.asarray(db.read_keypoints(im.image_id), float)[:, :2]
            keypoints[k] = len(xy[k])
            camera_id[k] = im.camera_id
        inliers = np.zeros((n_images, n_images), int)
        matches = {}
        pair_ids, geometries = db.read_two_view_geometries()
        for pair_id, geometry in zip(pair_ids, geometries):
            id1, id2 = pycolmap.pair_id_to_image_pair(pair_id)
            i, j = id_to_index[id1], id_to_index[id2]
            pair = np.asarray(geometry.inlier_matches, np.int64).reshape(-1, 2)
            inliers[i, j] = inliers[j, i] = len(pair)
            if len(pair):
                matches[(i, j) if i < j else (j, i)] = pair if i < j else pair[:, ::-1]
    finally:
        db.close()
    return _Matches(keypoints, inliers, matches, xy, camera_id)


def epipolar_agreement(
    K: np.ndarray,
    world2cam: np.ndarray,
    pair_points: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
    max_error: float,
) -> tuple[np.ndarray, np.ndarray]:
    """How many of each camera's verified matches its pose explains.

    A match (x_i, x_j) agrees with the poses when both points lie within ``max_error`` pixels of
    the epipolar lines that the poses induce (``F = K_j^-T [t]_x R K_i^-1`` of the relative pose
    ``T_j T_i^-1``). A camera registered in a mirrored or flipped pose (repeated structure, few
    matches) explains its own wrong matches but not the verified matches it has with the views
    it really neighbours.

    Args:
        K: ``(N, 3, 3)`` intrinsics.
        world2cam: ``(N, 4, 4)`` world-to-camera.
        pair_points: ``{(i, j): (x_i (m, 2), x_j (m, 2))}`` matched pixels of cameras i and j.
        max_error: pixels.

    Returns:
        ``agree`` and ``total`` ``(N,)`` int64: matches per camera that agree, and all of them.
    """
    n = len(K)
    agree, total = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for (i, j), (x_i, x_j) in pair_points.items():
        rel = world2cam[j] @ np.linalg.inv(world2cam[i])
        t = rel[:3, 3]
        t_cross = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
        F = np.linalg.inv(K[j]).T @ t_cross @ rel[:3, :3] @ np.linalg.inv(K[i])
        h_i = np.c_[x_i, np.ones(len(x_i))]
        h_j = np.c_[x_j, np.ones(len(x_j))]
        line_j, line_i = h_i @ F.T, h_j @ F
        algebraic = np.abs((h_j * line_j).sum(1))
        with np.errstate(divide="ignore", invalid="ignore"):
            d_j = algebraic / np.hypot(line_j[:, 0], line_j[:, 1])
            d_i = algebraic / np.hypot(line_i[:, 0], line_i[:, 1])
        ok = int(((d_i < max_error) & (d_j < max_error)).sum())
        agree[[i, j]] += ok
        total[[i, j]] += len(x_i)
    return agree, total


def _unregistered_reason(
    k: int,
    names: list[str],
    keypoints: np.ndarray,
    inliers: np.ndarray,
    min_matches: int,
    placed: set[int],
    other_model: int,
) -> str:
    """Why photo ``k`` is not in the largest model, in words for the user.

    Args:
        k: the photo's index.
        names: file names of all photos.
        keypoints: ``(n,)`` SIFT features per photo.
        inliers: ``(n, n)`` verified matches per pair.
        min_matches: verified matches a pair needs.
        placed: indices of the photos in the model.
        other_model: size of the separate model photo ``k`` is in (0 if none).
    """
    if keypoints[k] < min_matches:
        return f"too few features ({keypoints[k]}): a blank, blurred or very dark photo"
    if other_model > 0:
        return (
            f"it belongs to a separate group of {other_model} photos that could not be joined to "
            "the main model (too little overlap between the groups)"
        )
    best_placed = max(sorted(placed), key=lambda j: inliers[k, j], default=None)
    n_placed = 0 if best_placed is None else int(inliers[k, best_placed])
    if n_placed >= min_matches:
        return (
            f"matched placed photos (best: {n_placed} verified matches with "
            f"{names[best_placed]}) but its pose could not be estimated from them (too few "
            "or inconsistent, e.g. repeated or symmetric structure)"
        )
    reason = (
        f"too few matches with the placed photos (best: {n_placed} verified matches, "
        f"{min_matches} needed)"
    )
    strongest = int(np.argmax(inliers[k]))
    if inliers[k, strongest] >= min_matches:
        return (
            f"{reason}; its strongest match, {names[strongest]} ({inliers[k, strongest]} "
            "verified matches), could not be placed either"
        )
    return f"{reason}; it may not overlap the others"


@contextmanager
def _colmap_cancellation(progress: Progress) -> Iterator[pycolmap.CancellationToken]:
    """A pycolmap cancellation token that follows the job's cancel flag, so a cancel stops
    feature extraction, matching or mapping mid-way (pycolmap then raises InterruptedError)."""
    token = pycolmap.CancellationToken()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            if progress.cancel.cancelled:
                token.cancel()
                return

    watcher = threading.Thread(target=watch, name="colmap-cancel", daemon=True)
    watcher.start()
    try:
        yield token
    except InterruptedError as exc:
        raise Cancelled("Cancelled by the user.") from exc
    finally:
        stop.set()
        watcher.join()


def run_sfm(
    paths: list[str], options: SfmOptions, progress: Progress, seed: int = 0
) -> SparseModel:
    """Reconstruct cameras and sparse points of ``paths``; keeps the largest model.

    Args:
        paths: photo files (at least 2).
        options: sparse settings.
        progress: reports stages ``features``, ``matching``, ``mapping``; cancels between them.
        seed: random seed of RANSAC and mapping (a fixed seed makes the result repeatable).

    Raises:
        InputError: fewer than two photos or an unreadable photo.
        ReconstructionFailed: no model could be built (too few features or matches).
    """
    if len(paths) < 2:
        raise InputError("The classical backend needs at least two photos of the same scene.")
    with tempfile.TemporaryDirectory(prefix="recon-sfm-") as tmp:
        work = Path(tmp)
        image_dir = work / "images"
        image_dir.mkdir()
        database_path = work / "database.db"
        pycolmap.set_random_seed(seed)
        with _colmap_cancellation(progress) as token:
            return _run_in_workspace(
                paths, options, progress, image_dir, database_path, work, seed, token
            )


def _run_in_workspace(
    paths: list[str],
    options: SfmOptions,
    progress: Progress,
    image_dir: Path,
    database_path: Path,
    work: Path,
    seed: int,
    token: pycolmap.CancellationToken,
) -> SparseModel:
    n = len(paths)
    exif = [exif_camera(p) for p in paths]
    photo_sizes, work_sizes = _write_workspace_images(
        paths, image_dir, options.max_image_size, progress.sub(0.0, 0.3)
    )
    shared = _use_shared_camera(options, photo_sizes, exif)
    names = [f"{k:05d}.png" for k in range(n)]
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    camera_mode = pycolmap.CameraMode.SINGLE if shared else pycolmap.CameraMode.PER_IMAGE
    pycolmap.Database.open(str(database_path)).close()  # import_images needs an existing file
    pycolmap.import_images(database_path, image_dir, camera_mode, names, reader)
    _set_prior_focals(database_path, exif, photo_sizes, work_sizes)

    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = options.num_threads
    extraction.max_image_size = options.max_image_size
    extraction.sift.max_num_features = options.max_features
    # Affine-adapted SIFT copes better with the wide baselines of object shoots; a lower peak
    # threshold than COLMAP's 0.0067 finds enough features on small photos with plain
    # backgrounds (measured on the benchmark scenes; domain-size pooling cost 3x for no gain).
    extraction.sift.estimate_affine_shape = True
    extraction.sift.domain_size_pooling = False
    extraction.sift.peak_threshold = 0.004
    progress("features", 0.35, f"SIFT features on {n} photos")
    pycolmap.extract_features(
        database_path, image_dir, names, camera_mode, reader, extraction, pycolmap.Device.cpu,
        token,
    )

    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = options.num_threads
    # A slightly looser ratio test than 0.8 links more wide-baseline pairs; geometric
    # verification removes the extra false matches (0.9 let mirrored poses through).
    matching.sift.max_ratio = 0.85
    verification = pycolmap.TwoViewGeometryOptions()
    verification.min_num_inliers = options.min_num_matches
    verification.ransac.random_seed = seed
    sequential = options.matcher == "sequential" or (
        options.matcher == "auto" and n > options.exhaustive_max_images
    )
    progress("matching", 0.4, f"{'sequential' if sequential else 'exhaustive'} matching")
    if sequential:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = options.sequential_overlap
        pycolmap.match_sequential(
            database_path, matching, pairing, verification, pycolmap.Device.cpu, token
        )
    else:
        pycolmap.match_exhaustive(
            database_path, matching, pycolmap.ExhaustivePairingOptions(), verification,
            pycolmap.Device.cpu, token,
        )
    matches = _pair_statistics(database_path, n)

    ranked = _map(database_path, image_dir, work, options, seed, n, progress, token)
    if not ranked:
        raise ReconstructionFailed(
            _failure_message(paths, matches.keypoints, matches.inliers, options)
        )
    return _to_sparse_model(
        ranked, paths, photo_sizes, work_sizes, matches, options.min_num_matches
    )


def _map(
    database_path: Path,
    image_dir: Path,
    work: Path,
    options: SfmOptions,
    seed: int,
    n_images: int,
    progress: Progress,
    token: pycolmap.CancellationToken,
) -> list[pycolmap.Reconstruction]:
    """Incremental mapping; models of the best attempt, largest first.

    The result depends on the initial pair and RANSAC draws, and on wide-baseline object shoots
    an unlucky start can leave photos out or split the model, so up to ``mapping_attempts`` runs
    with different seeds are made until one registers every photo.
    """
    best: list[pycolmap.Reconstruction] = []
    for attempt in range(options.mapping_attempts):
        progress(
            "mapping",
            0.6 + 0.4 * attempt / options.mapping_attempts,
            f"incremental mapping with bundle adjustment (attempt {attempt + 1})",
        )
        mapping = pycolmap.IncrementalPipelineOptions()
        mapping.min_num_matches = options.min_num_matches
        mapping.num_threads = options.num_threads
        mapping.random_seed = seed + attempt
        mapping.min_model_size = 2
        mapping.ba_refine_principal_point = False
        mapping.structure_less_registration_fallback = False
        # Object-centred shoots have wide baselines and few features on plain backgrounds:
        # accept smaller (still RANSAC-verified) inlier sets than COLMAP's large-scene defaults.
        mapping.mapper.init_min_num_inliers = 50
        mapping.mapper.abs_pose_min_num_inliers = 15
        mapping.mapper.abs_pose_min_inlier_ratio = 0.15
        mapping.mapper.init_min_tri_angle = 8.0
        output = work / f"sparse{attempt}"
        models = pycolmap.incremental_mapping(
            database_path, image_dir, output, mapping, cancellation_token=token
        )
        ranked = sorted(models.values(), key=lambda r: r.num_reg_images(), reverse=True)
        if ranked and (not best or ranked[0].num_reg_images() > best[0].num_reg_images()):
            best = ranked
        if best and best[0].num_reg_images() == n_images:
            break
    progress("mapping", 1.0, f"{best[0].num_reg_images() if best else 0} photos registered")
    return best


def _failure_message(
    paths: list[str], keypoints: np.ndarray, inliers: np.ndarray, options: SfmOptions
) -> str:
    n_pairs = int((np.triu(inliers, 1) >= options.min_num_matches).sum())
    return (
        f"Structure from motion could not reconstruct any of the {len(paths)} photos: "
        f"median {int(np.median(keypoints))} features per photo, {n_pairs} photo pairs with at "
        f"least {options.min_num_matches} verified matches. Use photos with more texture and more "
        "overlap (each part of the scene seen from several nearby viewpoints)."
    )


def _to_sparse_model(
    ranked: list[pycolmap.Reconstruction],
    paths: list[str],
    photo_sizes: list[tuple[int, int]],
    work_sizes: list[tuple[int, int]],
    matches: _Matches,
    min_matches: int,
) -> SparseModel:
    rec = ranked[0]
    group_of: dict[int, int] = {}
    for other in ranked[1:]:
        for image_id in other.reg_image_ids():
            group_of.setdefault(int(Path(other.image(image_id).name).stem), other.num_reg_images())

    point_ids = sorted(rec.point3D_ids())
    point_index = {pid: i for i, pid in enumerate(point_ids)}
    points = np.array([rec.point3D(pid).xyz for pid in point_ids], float).reshape(-1, 3)
    colors = np.array([rec.point3D(pid).color for pid in point_ids], np.uint8).reshape(-1, 3)

    by_index = {int(Path(rec.image(i).name).stem): rec.image(i) for i in rec.reg_image_ids()}
    poses: dict[int, _Pose] = {}
    rejected: dict[int, str] = {}
    for k, image in by_index.items():
        seen = [p.point3D_id for p in image.points2D if p.has_point3D()]
        poses[k] = _Pose(image.camera, _homogeneous(image.cam_from_world().matrix()), seen)
        if len(seen) < _MIN_SUPPORT:
            # The mapper accepts poses from fewer inliers to keep chains of wide-baseline views
            # going, but a final pose this weakly supported is often a mirrored solution.
            rejected[k] = (
                f"its pose rests on only {len(seen)} sparse points ({_MIN_SUPPORT} needed)"
            )
    for k in rejected:
        del poses[k]
    agreement = _pose_agreement(poses, matches)
    for k, share in agreement.items():
        if share < _MIN_AGREEMENT:
            del poses[k]
            rejected[k] = (
                f"its pose explains only {share:.0%} of its verified matches with the other "
                "photos (likely a mirrored or flipped solution from repeated structure)"
            )
    # Photos the mapper left out or placed wrongly get one more chance: a pose from all their
    # matches to the accepted photos' 3D points, where the true neighbours' matches outvote a
    # few wrong ones.
    for k in range(len(paths)):
        if k not in poses and matches.camera_id[k] in rec.cameras:
            pose = _reregister(k, rec, poses, matches)
            if pose is not None:
                poses[k] = pose
                rejected.pop(k, None)

    names = [Path(p).name for p in paths]
    files, sizes, Ks, c2ws, visible, unregistered = [], [], [], [], [], []
    for k, path in enumerate(paths):
        if k not in poses:
            reason = rejected.get(k) or _unregistered_reason(
                k, names, matches.keypoints, matches.inliers, min_matches, set(poses),
                group_of.get(k, 0),
            )
            unregistered.append({"file": path, "reason": reason})
            continue
        pose = poses[k]
        files.append(path)
        sizes.append(photo_sizes[k])
        Ks.append(_K_photo(pose.camera, photo_sizes[k], work_sizes[k]))
        c2ws.append(np.linalg.inv(pose.cam_from_world))
        visible.append(np.array([point_index[p] for p in pose.point_ids], np.int64))
    if len(files) < 2:
        raise ReconstructionFailed(
            f"Structure from motion could not place at least two of the {len(paths)} photos "
            "reliably: " + "; ".join(f"{Path(u['file']).name}: {u['reason']}" for u in unregistered)
        )
    warnings = []
    if unregistered:
        warnings.append(
            f"{len(unregistered)} of {len(paths)} photos could not be registered: "
            + "; ".join(f"{Path(u['file']).name}: {u['reason']}" for u in unregistered)
        )
    if len(ranked) > 1:
        warnings.append(
            f"The photos split into {len(ranked)} separate models of "
            f"{', '.join(str(r.num_reg_images()) for r in ranked)} photos; only the largest is "
            "kept."
        )
    for message in warnings:
        log.warning(message)
    return SparseModel(
        files=files,
        photo_sizes=sizes,
        K_photo=np.stack(Ks),
        cam2world=np.stack(c2ws),
        points=points,
        colors=colors,
        visible=visible,
        unregistered=unregistered,
        warnings=warnings,
    )


@dataclass
class _Pose:
    """A photo's camera (workspace pixels), ``(4, 4)`` world-to-camera and observed 3D points."""

    camera: pycolmap.Camera
    cam_from_world: np.ndarray
    point_ids: list[int]


def _pose_agreement(poses: dict[int, _Pose], matches: _Matches) -> dict[int, float]:
    """Share of each posed photo's verified matches (with the other posed photos) that its pose
    explains (:func:`epipolar_agreement`), by photo index."""
    order = sorted(poses)
    slot = {k: s for s, k in enumerate(order)}
    K = np.stack([poses[k].camera.calibration_matrix() for k in order])
    world2cam = np.stack([poses[k].cam_from_world for k in order])
    pair_points = {
        (slot[i], slot[j]): (matches.xy[i][pair[:, 0]], matches.xy[j][pair[:, 1]])
        for (i, j), pair in matches.pairs.items()
        if i in slot and j in slot
    }
    agree, total = epipolar_agreement(K, world2cam, pair_points, _AGREEMENT_ERROR_PX)
    return {k: float(agree[s] / total[s]) if total[s] else 1.0 for k, s in slot.items()}


def _reregister(
    k: int, rec: pycolmap.Reconstruction, poses: dict[int, _Pose], matches: _Matches
) -> _Pose | None:
    """Photo ``k``'s pose by PnP-RANSAC on its matches to the posed photos' 3D points, or
    ``None`` when fewer than ``_MIN_SUPPORT`` inliers or less than ``_MIN_AGREEMENT`` of its
    verified matches support it."""
    image_id = {int(Path(rec.image(i).name).stem): i for i in rec.reg_image_ids()}
    xy_2d, ids_3d = [], []
    for (i, j), pair in matches.pairs.items():
        if k not in (i, j):
            continue
        other, own = (j, pair[:, 0]) if i == k else (i, pair[:, 1])
        theirs = pair[:, 1] if i == k else pair[:, 0]
        if other not in poses or other not in image_id:
            continue
        points2D = rec.image(image_id[other]).points2D
        for a, b in zip(own, theirs):
            point = points2D[int(b)]
            if point.has_point3D():
                xy_2d.append(matches.xy[k][a])
                ids_3d.append(point.point3D_id)
    if len(ids_3d) < _MIN_SUPPORT:
        return None
    camera = rec.camera(matches.camera_id[k])
    estimation = pycolmap.AbsolutePoseEstimationOptions()
    estimation.ransac.max_error = _AGREEMENT_ERROR_PX
    estimation.ransac.random_seed = 0  # repeatable, like the rest of the run
    xyz = np.array([rec.point3D(p).xyz for p in ids_3d], float)
    found = pycolmap.estimate_and_refine_absolute_pose(np.array(xy_2d), xyz, camera, estimation)
    if found is None or found["num_inliers"] < _MIN_SUPPORT:
        return None
    inlier_ids = sorted({p for p, ok in zip(ids_3d, found["inlier_mask"]) if ok})
    pose = _Pose(camera, _homogeneous(found["cam_from_world"].matrix()), inlier_ids)
    share = _pose_agreement({**poses, k: pose}, matches)[k]
    if share < _MIN_AGREEMENT:
        return None
    log.info(
        "photo %d re-registered: %d PnP inliers, %.0f%% of its matches agree",
        k, found["num_inliers"], 100 * share,
    )
    return pose


def _homogeneous(matrix_3x4: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :4] = matrix_3x4
    return out


def _K_photo(
    camera: pycolmap.Camera, photo_size: tuple[int, int], work_size: tuple[int, int]
) -> np.ndarray:
    """``(3, 3)`` intrinsics in photo pixels, our convention, from a COLMAP workspace camera."""
    sx = photo_size[0] / work_size[0]
    sy = photo_size[1] / work_size[1]
    # COLMAP's principal point is in its (0.5, 0.5)-centred pixels, i.e. already "+0.5" ours.
    return np.array(
        [
            [sx * camera.focal_length_x, 0.0, sx * camera.principal_point_x - 0.5],
            [0.0, sy * camera.focal_length_y, sy * camera.principal_point_y - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )

"""Scene settings of a reconstruction job, and their translation into a :class:`JobConfig`.

The settings live on ``scene.recon`` (saved with the .blend); the progress of a running job lives
on the window manager (never saved). :func:`to_job_config` is the one place where panel settings
and preferences become the job the worker runs.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from ..core import checkpoints
from ..core.config import JobConfig
from ..core.dust3r.download import weights_file
from ..core.dust3r.registry import WEIGHTS
from ..core.errors import InputError, WeightsError
from . import preferences

# "quality" keeps the global alignment's defaults (L-BFGS, which converges in tens of
# iterations); "speed" caps the iterations lower.
DUST3R_SPEED = {"iterations": 30}

# The classical backend's own defaults are its "quality"; "speed" halves the costly parts.
CLASSICAL_SPEED = {"max_features": 4096, "num_hypotheses": 48, "refine_hypotheses": 4}
CLASSICAL_MATCHERS = {"complete": "exhaustive", "swin": "sequential"}  # others: its "auto"


class ReconSettings(bpy.types.PropertyGroup):
    directory: StringProperty(
        name="Photos", description="Folder with the photos to reconstruct", subtype="DIR_PATH"
    )
    backend: EnumProperty(
        name="Backend",
        items=(
            ("classical", "Classical", "Feature matching + SfM + multi-view stereo; no weights"),
            ("dust3r", "DUSt3R", "DUSt3R network + global alignment; needs downloaded weights"),
        ),
        default="classical",
    )
    resolution: EnumProperty(
        name="Resolution",
        description="Long side of the working images in pixels (DUSt3R: the network input; "
        "classical: the dense-matching grid)",
        items=(("512", "512 px", "Full network resolution"), ("224", "224 px", "Fast, coarse")),
        default="512",
    )
    pair_graph: EnumProperty(
        name="Pairs",
        description="Which photo pairs are matched",
        items=(
            ("complete", "All Pairs", "Every pair of photos (best for < ~30 photos)"),
            ("swin", "Sliding Window", "Each photo with its next neighbours (ordered sequences)"),
            ("logwin", "Log Window", "Neighbours at 1, 2, 4, ... photos apart (classical: automatic)"),
            ("oneref", "One Reference", "Every photo paired with the first (classical: automatic)"),
        ),
        default="complete",
    )
    window: IntProperty(name="Window", description="Neighbours per photo", default=3, min=1)
    preset: EnumProperty(
        name="Preset",
        items=(("quality", "Quality", "More iterations"), ("speed", "Speed", "Fewer iterations")),
        default="quality",
    )
    output: EnumProperty(
        name="Output",
        items=(
            ("POINTS", "Points", "Coloured point cloud"),
            ("MESH", "Mesh", "Coloured mesh triangulated from each photo's pointmap"),
            ("BOTH", "Both", "Point cloud and mesh"),
        ),
        default="POINTS",
    )
    auto_threshold: BoolProperty(
        name="Suggested Threshold",
        description="Use the confidence threshold the backend suggests",
        default=True,
    )
    conf_threshold: FloatProperty(
        name="Confidence",
        description="Pixels with confidence at or below this are dropped (DUSt3R: >= 1; "
        "classical: 0..1)",
        default=3.0,
        min=0.0,
    )
    sky_mask: BoolProperty(
        name="Mask Sky",
        description="Drop sky pixels found by the DUSt3R demo's colour heuristic (the large "
        "bluish or bright greyish regions); white walls may be taken for sky",
        default=False,
    )
    last_result_dir: StringProperty(name="Result", description="Folder of the last result")
    last_collection: StringProperty(name="Collection", description="Collection of the last import")


def _register_wm_props() -> None:
    wm = bpy.types.WindowManager
    wm.recon_running = BoolProperty(default=False)
    wm.recon_cancel_requested = BoolProperty(default=False)
    wm.recon_progress = FloatProperty(name="Progress", subtype="FACTOR", min=0.0, max=1.0)
    wm.recon_status = StringProperty(name="Status")


def _unregister_wm_props() -> None:
    for name in ("recon_running", "recon_cancel_requested", "recon_progress", "recon_status"):
        if hasattr(bpy.types.WindowManager, name):
            delattr(bpy.types.WindowManager, name)


PHOTOS_ONLY_THE_WORKER_READS = (".heic", ".heif")
"""HEIC/HEIF (iPhones' default): Blender has no reader, the worker decodes them with pillow-heif
and writes JPEG copies for Blender to show (``core.images.HEIF_EXTENSIONS``)."""


def photo_files(folder: str) -> list[str]:
    """Paths of the image files in ``folder``, sorted by name (not recursive).

    Blender's own list of image extensions (plus HEIC/HEIF) is used because ``core.images``
    needs Pillow, which Blender's Python lacks; the worker skips files it cannot decode and
    says so.
    """
    return [
        str(p) for p in sorted(Path(folder).iterdir())
        if p.is_file() and (p.suffix.lower() in bpy.path.extensions_image
                            or p.suffix.lower() in PHOTOS_ONLY_THE_WORKER_READS)
    ]


def find_checkpoint(folder: Path, resolution: str):
    """The released DUSt3R checkpoint to use from the weights ``folder``, or None.

    One made for ``resolution`` ("512"/"224") comes first, 512 DPT before 512 linear (the
    registry's order); else any checkpoint present, whose own resolution is then used.

    Returns:
        a :class:`core.checkpoints.CheckpointStatus` with ``path`` set, or None.
    """
    present = [s for s in checkpoints.folder_status(folder) if s.path is not None]
    matching = [s for s in present if s.info.preset.split("_")[0] == resolution]
    return (matching + present + [None])[0]


def missing_weights_message(folder: Path, resolution: str) -> str:
    """Why no DUSt3R checkpoint was found: the folder searched and the file names looked for."""
    names = []
    for info in WEIGHTS.values():
        if info.preset.split("_")[0] == resolution:
            pth, hf = weights_file(info, folder), checkpoints.safetensors_file(info, folder)
            names.append(f"{pth.name} or {hf.relative_to(folder)}")
    missing = "" if folder.is_dir() else ", which does not exist"
    return (f"No DUSt3R weights found in {folder}{missing} (looked for {' or '.join(names)}, "
            "or another resolution's).")


def resolve_backend(props: ReconSettings, prefs,
                    extra_options: dict | None = None) -> tuple[str, str]:
    """The backend a panel job will actually use, and a note for the user ("" when all is as
    chosen): DUSt3R chosen without weights (none in the weights folder and no ``weights`` in
    ``extra_options``) falls back to the classical backend."""
    folder = preferences.weights_folder(prefs)
    if (props.backend == "dust3r" and not (extra_options or {}).get("weights")
            and find_checkpoint(folder, props.resolution) is None):
        return "classical", (
            f"{missing_weights_message(folder, props.resolution)} The classical backend is used. "
            "Download or locate a checkpoint in the preferences (DUSt3R Models)."
        )
    return props.backend, ""


def backend_options(backend: str, props: ReconSettings, prefs,
                    extra_options: dict | None = None) -> dict:
    """Backend-specific ``JobConfig.options`` from the panel settings.

    DUSt3R takes the checkpoint from ``extra_options["weights"]`` (its ``image_size`` then from the
    panel's resolution), else from the weights folder.

    Raises:
        WeightsError: DUSt3R with a ``weights`` option naming no file, or with neither that
            option nor a checkpoint in the folder (an explicit request never falls back;
            :func:`resolve_backend` does for the panel).
    """
    if backend == "dust3r":
        options = {"graph": props.pair_graph, "window": props.window,
                   **(DUST3R_SPEED if props.preset == "speed" else {})}
        weights = (extra_options or {}).get("weights")
        if weights:
            if not Path(bpy.path.abspath(str(weights))).exists():
                raise WeightsError(f"The DUSt3R weights file {weights} does not exist; give the "
                                   "path of a checkpoint (.pth, .safetensors or its folder).")
            return {"image_size": int(props.resolution), **options}
        folder = preferences.weights_folder(prefs)
        checkpoint = find_checkpoint(folder, props.resolution)
        if checkpoint is None:
            raise WeightsError(
                f"{missing_weights_message(folder, props.resolution)} Download or locate a "
                "checkpoint in the preferences (DUSt3R Models), give the folder that holds it "
                "(headless: --weights-dir FOLDER), or the file itself as the \"weights\" option "
                "(headless: --options '{\"weights\": \"/path/to/file.pth\"}')."
            )
        return {"weights": str(checkpoint.path),
                "image_size": int(checkpoint.info.preset.split("_")[0]), **options}
    if backend == "classical":
        options = {"resolution": int(props.resolution),
                   "matcher": CLASSICAL_MATCHERS.get(props.pair_graph, "auto")}
        if props.pair_graph == "swin":
            options["sequential_overlap"] = props.window
        if props.preset == "speed":
            options.update(CLASSICAL_SPEED)
        return options
    return {}


def to_job_config(props: ReconSettings, prefs, directory: str = "", backend: str = "",
                  extra_options: dict | None = None) -> JobConfig:
    """The job for the photos in ``directory`` (default: the panel's folder).

    Args:
        backend: overrides the panel's backend (scripts and tests use "synthetic"/"result_file").
        extra_options: merged over the backend options.

    Raises:
        InputError: no folder, or no images in it.
        WeightsError: ``backend`` "dust3r" without weights (see :func:`backend_options`).
    """
    folder = bpy.path.abspath(directory or props.directory)
    if not folder or not Path(folder).is_dir():
        raise InputError(f"Photo folder {folder!r} does not exist; choose a folder of photos.")
    images = photo_files(str(Path(folder).resolve()))
    if not images:
        raise InputError(f"No images (.jpg, .png, .heic, ...) found in {folder}; choose a folder of photos.")
    if not backend:
        backend, _note = resolve_backend(props, prefs, extra_options)
    options = backend_options(backend, props, prefs, extra_options)
    options.update(extra_options or {})
    cache = preferences.cache_folder(prefs) / "predictions"
    return JobConfig(images=tuple(images), backend=backend, device=prefs.device, options=options,
                     cache_dir=str(cache))


CLASSES = (ReconSettings,)


def register_props() -> None:
    bpy.types.Scene.recon = PointerProperty(type=ReconSettings)
    _register_wm_props()


def unregister_props() -> None:
    _unregister_wm_props()
    del bpy.types.Scene.recon

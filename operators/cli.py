"""Headless reconstruction: a folder of photos in; a .blend, a preview and camera errors out.

    blender -b --python operators/cli.py -- --images DIR --out scene.blend [options]
    python operators/cli.py --images DIR --out scene.blend [options]        (the bpy module)

It uses the installed extension when Blender has it enabled, else loads this checkout's add-on
from source. The job runs synchronously through the same operator as the panel
(``bpy.ops.recon.reconstruct``; timers and modal operators do not run headless). Exit status:
0 on success, 1 with a one-line reason on stderr on failure, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

ADDON_ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGE = "photo_recon"
BACKENDS = ("classical", "dust3r", "synthetic", "result_file")
PANEL_BACKENDS = ("classical", "dust3r")  # the others are test/utility backends

log = logging.getLogger("photo_recon.cli")


class CliError(Exception):
    """A failure reported as one line on stderr, exit status 1."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="operators/cli.py", description="Reconstruct cameras and geometry from photos.")
    parser.add_argument("--images", required=True, help="folder of photos")
    parser.add_argument("--out", required=True, help=".blend file to write")
    parser.add_argument("--backend", choices=BACKENDS, default="classical")
    parser.add_argument("--options", default="{}", help="JSON object of backend options")
    parser.add_argument("--resolution", choices=("512", "224"), default="512")
    parser.add_argument("--graph", choices=("complete", "swin", "logwin", "oneref"), default="complete")
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--preset", choices=("quality", "speed"), default="quality")
    parser.add_argument("--output", choices=("points", "mesh", "both"), default="points")
    parser.add_argument("--conf-threshold", type=float, default=None,
                        help="confidence threshold (default: the backend's suggestion)")
    parser.add_argument("--sky-mask", action="store_true", help="drop sky pixels (colour heuristic)")
    parser.add_argument("--preview", help="PNG to render through the first camera (Cycles, CPU)")
    parser.add_argument("--preview-size", type=int, default=320, help="long side of the preview")
    parser.add_argument("--truth", help="gt.json with true cameras: print the camera errors")
    parser.add_argument("--python", help="worker Python interpreter (default: this one)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--weights-dir", help="folder with DUSt3R weights")
    parser.add_argument("--cache-dir", help="folder for job folders and caches")
    return parser.parse_args(argv)


def script_args(argv: list[str]) -> list[str]:
    """Our arguments: those after ``--`` (Blender's own come before it), else all but argv[0]."""
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


def load_addon(bpy) -> str:
    """The add-on's package name: the enabled extension, else this checkout loaded from source
    (registered, with an entry in the preferences so that its AddonPreferences exist)."""
    for name in bpy.context.preferences.addons.keys():
        if name == SOURCE_PACKAGE or name.endswith("." + SOURCE_PACKAGE):
            return name
    if SOURCE_PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            SOURCE_PACKAGE, ADDON_ROOT / "__init__.py", submodule_search_locations=[str(ADDON_ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[SOURCE_PACKAGE] = module
        spec.loader.exec_module(module)
    sys.modules[SOURCE_PACKAGE].register()
    bpy.context.preferences.addons.new().module = SOURCE_PACKAGE
    return SOURCE_PACKAGE


def clear_startup_scene(bpy) -> None:
    """Remove the startup file's collection and objects (cube, light, camera) when no .blend
    was opened."""
    if not bpy.data.filepath:
        data = [o.data for o in bpy.data.objects if o.data is not None]
        bpy.data.batch_remove(list(bpy.data.objects) + list(bpy.data.collections))
        bpy.data.batch_remove([d for d in data if d.users == 0])


def apply_settings(bpy, package: str, args: argparse.Namespace) -> None:
    """Command-line options into the scene settings and the add-on preferences."""
    props = bpy.context.scene.recon
    props.directory = str(Path(args.images).resolve())
    if args.backend in PANEL_BACKENDS:
        props.backend = args.backend
    props.resolution, props.pair_graph, props.window = args.resolution, args.graph, args.window
    props.preset, props.output, props.sky_mask = args.preset, args.output.upper(), args.sky_mask
    props.auto_threshold = args.conf_threshold is None
    if args.conf_threshold is not None:
        props.conf_threshold = args.conf_threshold
    prefs = bpy.context.preferences.addons[package].preferences
    if args.python is not None:
        prefs.python = args.python
    if args.device is not None:
        prefs.device = args.device
    for name in ("weights_dir", "cache_dir"):
        if getattr(args, name) is not None:
            setattr(prefs, name, str(Path(getattr(args, name)).resolve()))


def render_preview(bpy, collection, path: Path, long_side: int) -> None:
    """Render ``collection`` through its first camera (by name) with Cycles on the CPU."""
    cameras = sorted((o for o in collection.all_objects if o.type == "CAMERA"), key=lambda o: o.name)
    if not cameras:
        raise CliError("No camera was imported, so there is no view for the preview.")
    scene = bpy.context.scene
    scene.camera = cameras[0]
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 16, False
    largest = max(scene.render.resolution_x, scene.render.resolution_y)
    scene.render.resolution_percentage = max(1, min(100, round(100 * long_side / largest)))
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.render.render(write_still=True)


def run(argv: list[str]) -> int:
    args = parse_args(script_args(argv))
    import bpy

    clear_startup_scene(bpy)
    package = load_addon(bpy)
    apply_settings(bpy, package, args)
    images = Path(args.images)
    if not images.is_dir():
        raise CliError(f"--images {images} is not a folder; give a folder of photos.")
    try:
        bpy.ops.recon.reconstruct(
            directory=str(images.resolve()),
            backend="PANEL" if args.backend in PANEL_BACKENDS else args.backend,
            options_json=args.options,
        )
    except RuntimeError as exc:  # the operator's ERROR report, e.g. "Error: No images found ..."
        raise CliError(str(exc).removeprefix("Error: ").strip()) from exc
    props = bpy.context.scene.recon
    collection = bpy.data.collections[props.last_collection]
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(out))
    print(f"saved {out}: collection '{collection.name}' with {len(collection.all_objects)} objects")
    for warning in filter(None, collection.get("recon_warnings", "").split("\n")):
        print(f"warning: {warning}")
    if args.preview:
        render_preview(bpy, collection, Path(args.preview).resolve(), args.preview_size)
        print(f"preview {Path(args.preview).resolve()}")
    if args.truth:
        print_camera_errors(package, props.last_result_dir, args.truth)
    return 0


def print_camera_errors(package: str, result_dir: str, truth_path: str) -> None:
    metrics = importlib.import_module(f"{package}.core.metrics")
    errors = importlib.import_module(f"{package}.core.errors")
    result = importlib.import_module(f"{package}.core.result").SceneResult.load(result_dir)
    try:
        summary = metrics.camera_errors(result, metrics.load_truth(truth_path)).summary()
    except errors.ReconstructionError as exc:
        raise CliError(str(exc)) from exc
    print(f"camera errors against {truth_path}:")
    print(summary)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    # `timeout`, CI runners and kill send SIGTERM: make it a Ctrl+C, on which the job stops its
    # worker (a worker runs in its own session and would outlive us otherwise).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(argv)
    except CliError as exc:
        print(f"photo_recon: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("photo_recon: error: interrupted; the worker was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    try:
        status = main(sys.argv)
    except SystemExit as exc:  # argparse: bad arguments (2) or --help (0)
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a bug: show it, but still leave through os._exit below
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # bpy 4.5 can hang at interpreter exit (a static destructor waits forever); the work is
    # saved and the streams flushed, so leave at once.
    os._exit(status)

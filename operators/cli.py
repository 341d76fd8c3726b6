"""Headless reconstruction: a folder of photos in; a .blend, a preview and camera errors out.

    blender -b --python operators/cli.py -- --images DIR --out scene.blend [options]
    python operators/cli.py --images DIR --out scene.blend [options]        (the bpy module)

It uses the installed extension when Blender has it enabled, else loads this checkout's add-on
from source (:func:`load_addon`, also for one's own scripts). The job runs synchronously through
the same operator as the panel (``bpy.ops.recon.reconstruct``; timers and modal operators do not
run headless); the backend asked for is the one run (DUSt3R without weights fails, where the
panel would fall back to the classical backend). The output paths are checked before the job
starts. Exit status: 0 on success, 1 with a one-line reason on stderr on failure (a crashed
worker adds the last lines of its log), 2 for bad arguments, 130 when interrupted (Ctrl+C,
SIGTERM; the worker is stopped first).
"""

from __future__ import annotations

import argparse
import atexit
import errno
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

ADDON_ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGE = "photo_recon"
BACKENDS = ("classical", "dust3r", "synthetic", "result_file")
PANEL_BACKENDS = ("classical", "dust3r")  # the others are test/utility backends

log = logging.getLogger("photo_recon.cli")


class CliError(Exception):
    """A failure reported as one line on stderr, exit status 1."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, unless it has none (the help then says what
    happens without it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def json_object(text: str) -> dict:
    """``--options``: a JSON object, else an argument error (exit status 2)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object ({{...}}), not {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1, else an argument error (Blender's properties would clamp it silently)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="operators/cli.py", description="Reconstruct cameras and geometry from photos.",
        formatter_class=_HelpFormatter)
    parser.add_argument("--images", required=True, help="folder of photos")
    parser.add_argument("--out", required=True, help=".blend file to write")
    # synthetic and result_file are test/utility backends: accepted, not advertised.
    parser.add_argument("--backend", choices=BACKENDS, default="classical",
                        metavar="{" + ",".join(PANEL_BACKENDS) + "}",
                        help="reconstruction method (dust3r needs its weights)")
    parser.add_argument("--options", type=json_object, default="{}",
                        help="JSON object of backend options, e.g. '{\"weights\": \"/path/file.pth\"}'")
    parser.add_argument("--resolution", choices=("512", "224"), default="512",
                        help="working image size in pixels (long side)")
    parser.add_argument("--graph", choices=("complete", "swin", "logwin", "oneref"),
                        default="complete", help="which photo pairs are matched")
    parser.add_argument("--window", type=positive_int, default=3, help="neighbours per photo (swin, logwin)")
    parser.add_argument("--preset", choices=("quality", "speed"), default="quality",
                        help="speed: fewer iterations and features")
    parser.add_argument("--output", choices=("points", "mesh", "both"), default="points",
                        help="objects built from the result")
    parser.add_argument("--conf-threshold", type=float, default=None,
                        help="confidence threshold (default: the backend's suggestion)")
    parser.add_argument("--sky-mask", action="store_true", help="drop sky pixels (colour heuristic)")
    parser.add_argument("--preview", help="PNG to render through the first camera (Cycles, CPU; "
                        "default: none)")
    parser.add_argument("--preview-size", type=positive_int, default=320, help="long side of the preview")
    parser.add_argument("--truth", help="gt.json with true cameras: print the camera errors "
                        "(default: none)")
    parser.add_argument("--python", help="worker Python interpreter (default: this one)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"),
                        help="where the worker computes (default: the preference, auto)")
    parser.add_argument("--weights-dir", help="folder with DUSt3R weights (default: the "
                        "preference, else the add-on's user folder)")
    parser.add_argument("--cache-dir", help="folder for job folders and caches (default: the "
                        "preference, else the add-on's user folder)")
    parser.add_argument("--keep-jobs", type=positive_int, default=None, metavar="N",
                        help="job folders kept in the cache folder; older ones are deleted when "
                        "this job starts (default: the Keep Jobs preference, 10)")
    return parser.parse_args(argv)


def script_args(argv: list[str]) -> list[str]:
    """Our arguments: those after ``--`` (Blender's own come before it), else all but argv[0]."""
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


def load_addon(bpy) -> str:
    """Make ``bpy.ops.recon`` and ``scene.recon`` available; return the add-on's package name.

    The enabled extension when Blender has one, else this checkout loaded from source (registered,
    with an entry in the preferences so that its AddonPreferences exist). For one's own scripts
    with the ``bpy`` module, which enables no add-on: put this file's folder on ``sys.path``,
    ``import cli`` and call ``cli.load_addon(bpy)`` once (the add-on is unregistered at exit).
    """
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
    # The bpy 4.5 module hangs at interpreter exit while an add-on it did not enable itself is
    # still registered; unregistering first lets a script end normally.
    atexit.register(sys.modules[SOURCE_PACKAGE].unregister)
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
    if args.keep_jobs is not None:
        prefs.keep_jobs = args.keep_jobs
    for name in ("weights_dir", "cache_dir"):
        if getattr(args, name) is not None:
            setattr(prefs, name, str(Path(getattr(args, name)).resolve()))


def check_worker_python(package: str) -> None:
    """Refuse a worker interpreter that cannot be started, naming the flag that sets it.

    Raises:
        CliError: ``--python`` (or the installed extension's Worker Python preference) is not an
            executable file.
    """
    preferences = importlib.import_module(f"{package}.ui.preferences")
    python = preferences.worker_python(preferences.get_preferences())
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise CliError(f"The worker Python {python} is not an executable file; give a Python "
                       "interpreter with --python (or fix the extension's Worker Python "
                       "preference).")


def writable_file(path_text: str, flag: str) -> Path:
    """The absolute path of an output file, once it is known that it can be written.

    Creates nothing: the nearest existing folder on the way must accept a new file (probed with
    a temporary file, which is all that tells for sure on read-only or virtual file systems).

    Raises:
        CliError: the path is a folder, or it cannot be written (naming the path and why).
    """
    path = Path(path_text).resolve()
    if path.is_dir():
        raise CliError(f"{flag} {path} is a folder; give a file name.")
    folder = next(p for p in path.parents if p.exists())
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CliError(f"{flag} {path} cannot be written ({exc.strerror or exc}); choose a "
                       "writable place.") from exc
    return path


def save_blend(bpy, path: Path) -> None:
    """Save the scene as ``path`` (its folder created).

    Raises:
        CliError: the folder cannot be created or Blender cannot write the file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        bpy.ops.wm.save_as_mainfile(filepath=str(path))
    except (OSError, RuntimeError) as exc:
        raise CliError(f"Cannot save {path}: {_reason(exc)}") from exc


def render_preview(bpy, collection, path: Path, long_side: int) -> None:
    """Render ``collection`` through its first camera (by name) with Cycles on the CPU.

    Raises:
        CliError: no camera, or the folder or the image cannot be written.
    """
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # an old preview must not pass for this one
        bpy.ops.render.render(write_still=True)
    except (OSError, RuntimeError) as exc:
        raise CliError(f"Cannot render the preview {path}: {_reason(exc)}") from exc
    if not path.is_file():  # Blender reports a failed image write only on its console
        raise CliError(f"The preview {path} was rendered but could not be written.")


def _reason(exc: BaseException) -> str:
    """One line from an OSError or an operator's RuntimeError (``"Error: ..."``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return " ".join(str(exc).removeprefix("Error: ").split())


def run(argv: list[str]) -> int:
    args = parse_args(script_args(argv))
    images = Path(args.images)
    if not images.is_dir():
        raise CliError(f"--images {images} is not a folder; give a folder of photos.")
    if args.truth and not Path(args.truth).is_file():
        raise CliError(f"--truth {args.truth} is not a file; give a gt.json with the true cameras.")
    if isinstance(args.options.get("weights"), str):  # the worker runs in its job folder
        args.options["weights"] = str(Path(args.options["weights"]).expanduser().resolve())
    out = writable_file(args.out, "--out")
    preview = writable_file(args.preview, "--preview") if args.preview else None
    import bpy

    clear_startup_scene(bpy)
    package = load_addon(bpy)
    apply_settings(bpy, package, args)
    check_worker_python(package)
    try:
        bpy.ops.recon.reconstruct(
            directory=str(images.resolve()), backend=args.backend,
            options_json=json.dumps(args.options),
        )
    except RuntimeError as exc:  # the operator's ERROR report, e.g. "Error: No images found ..."
        if _INTERRUPTED.is_set():  # the operator stopped the worker and reported it
            raise KeyboardInterrupt(_reason(exc)) from exc
        raise CliError(_reason(exc)) from exc
    props = bpy.context.scene.recon
    collection = bpy.data.collections[props.last_collection]
    save_blend(bpy, out)
    print(f"saved {out}: collection '{collection.name}' with {len(collection.all_objects)} objects")
    for warning in filter(None, collection.get("recon_warnings", "").split("\n")):
        print(f"warning: {warning}")
    if preview is not None:
        render_preview(bpy, collection, preview, args.preview_size)
        print(f"preview {preview}")
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


_INTERRUPTED = threading.Event()
"""Set on Ctrl+C or SIGTERM. The operator turns the KeyboardInterrupt into an error report
(nothing but a RuntimeError crosses ``bpy.ops``), so this tells an interruption apart."""


def _interrupt(signum, frame) -> None:
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    # `timeout`, CI runners and kill send SIGTERM: make it a Ctrl+C, on which the job stops its
    # worker (a worker runs in its own session and would outlive us otherwise).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(argv)
    except CliError as exc:
        print(f"photo_recon: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"photo_recon: error: {exc or 'Interrupted'}", file=sys.stderr)
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

"""Command line: align a pair-predictions cache file and write a result folder.

``python -m core.align CACHE.npz --out DIR [--options JSON]`` where JSON is an object of
:class:`~core.align.options.AlignOptions` fields, given inline or as a path to a JSON file.
Progress goes to stderr. Exit status: 0 with the result folder written; 1 with a one-line
message when the cache cannot be read, the alignment fails or the folder cannot be written;
2 for a bad command line (also an ``--options`` that is not a JSON object or a readable file).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import ReconstructionError
from ..predictions import PairPredictions
from ..progress import Progress
from .options import AlignOptions
from .pipeline import align

log = logging.getLogger("core.align")


def json_options(text: str) -> dict:
    """``--options``: an inline JSON object (starts with ``{``) or the path of a file holding one.

    Raises:
        argparse.ArgumentTypeError: a missing or unreadable file, invalid JSON, not an object.
    """
    source = repr(text)
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise argparse.ArgumentTypeError(
                f"the file {text} {'is a folder' if path.is_dir() else 'does not exist'}; give "
                "a JSON object ('{...}') or the path of a JSON file")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from exc
        source = str(path)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{source} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{source} must be a JSON object of alignment options "
                                         f"({{...}}), not {type(value).__name__}")
    return value


def _write(result, out: Path) -> None:
    """Save the result folder; an OS error becomes one line naming the folder."""
    try:
        result.save(out)
    except OSError as exc:
        raise ReconstructionError(f"Cannot write the result folder {out}: "
                                  f"{exc.strerror or exc}. Choose a folder you can write to.") \
            from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.align",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("cache", help="pair-predictions .npz file")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for result.json + result.npz")
    parser.add_argument("--options", type=json_options, default={},
                        help="JSON object (or JSON file) of alignment options")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def report(stage: str, fraction: float, message: str) -> None:
        log.info("%s %3.0f%% %s", stage, 100 * fraction, message)

    try:
        options = AlignOptions.from_dict(args.options)
        preds = PairPredictions.load(args.cache)
        result = align(preds, options, Progress(report))
        result.warnings = [*preds.warnings, *result.warnings]
        _write(result, args.out)
    except ReconstructionError as exc:
        log.error("%s", exc)
        return 1
    for warning in result.warnings:
        log.warning("%s", warning)
    log.info("wrote %s (%d images)", args.out, len(result.images))
    return 0


if __name__ == "__main__":
    sys.exit(main())

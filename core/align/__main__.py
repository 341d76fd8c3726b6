"""Command line: align a pair-predictions cache file and write a result folder.

``python -m core.align CACHE.npz --out DIR [--options JSON]`` where JSON is an object of
:class:`~core.align.options.AlignOptions` fields, given inline or as a path to a ``.json`` file.
Progress goes to stderr; the exit status is 1 with the error's message on a known failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import InputError, ReconstructionError
from ..predictions import PairPredictions
from ..progress import Progress
from .options import AlignOptions
from .pipeline import align

log = logging.getLogger("core.align")


def _options(text: str | None) -> AlignOptions:
    if not text:
        return AlignOptions()
    path = Path(text)
    try:
        data = json.loads(path.read_text() if path.suffix == ".json" and path.is_file() else text)
    except (OSError, ValueError) as exc:
        raise InputError(f"--options is neither a JSON object nor a readable .json file: {exc}")
    if not isinstance(data, dict):
        raise InputError("--options must be a JSON object of alignment options.")
    return AlignOptions.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.align",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("cache", help="pair-predictions .npz file")
    parser.add_argument("--out", required=True, help="folder for result.json + result.npz")
    parser.add_argument("--options", help="JSON object (or .json file) of alignment options")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def report(stage: str, fraction: float, message: str) -> None:
        log.info("%s %3.0f%% %s", stage, 100 * fraction, message)

    try:
        result = align(PairPredictions.load(args.cache), _options(args.options), Progress(report))
        result.save(args.out)
    except ReconstructionError as exc:
        log.error("%s", exc)
        return 1
    for warning in result.warnings:
        log.warning("%s", warning)
    log.info("wrote %s (%d images)", args.out, len(result.images))
    return 0


if __name__ == "__main__":
    sys.exit(main())

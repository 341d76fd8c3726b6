"""Downloading released weights, only when the user asks and online access is allowed (torch-free).

The file is written to ``<name>.part`` beside its final name and renamed only once complete, so a
half-downloaded file is never loaded. An interrupted download resumes from the ``.part`` file with
an HTTP ``Range`` request. Without online access the error says what to download from where and
where to put it.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import WeightsError
from ..progress import Progress
from .registry import WeightsInfo

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 18


def weights_file(info: WeightsInfo, folder: str | Path) -> Path:
    """Where the ``.pth`` of ``info`` lives in the weights folder."""
    return Path(folder) / info.pth_file


def ensure_weights(
    info: WeightsInfo,
    folder: str | Path,
    allow_network: bool,
    progress: Progress | None = None,
    url: str | None = None,
    timeout_s: float = 30.0,
) -> Path:
    """Return the path of the checkpoint, downloading it first if it is not in ``folder``.

    Args:
        info: which checkpoint (:data:`.registry.WEIGHTS`).
        folder: the weights folder (from the extension's preferences); created if needed.
        allow_network: whether the user allows online access (Blender passes
            ``bpy.app.online_access``); without it nothing is downloaded.
        progress: reports ``("download", fraction, message)`` per chunk and cancels between chunks
            (the ``.part`` file stays for a later resume).
        url: download from here instead of :attr:`WeightsInfo.pth_url` (mirrors, tests).
        timeout_s: socket timeout per read.

    Raises:
        WeightsError: no online access, a network or server failure, or a short download; the
            message says how to get the file by hand.
        Cancelled: the user cancelled.
    """
    target = weights_file(info, folder)
    if target.is_file():
        return target
    url = url or info.pth_url
    by_hand = (f"Download {url} (about {info.approx_size_bytes / 1e9:.1f} GB, licence "
               f"{info.licence}) and save it as {target}.")
    if not allow_network:
        raise WeightsError(f"The DUSt3R weights {info.pth_file} are not in {target.parent} and "
                           f"online access is off (Blender: Preferences > System > Network). "
                           f"{by_hand}")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        _download(url, part, progress or Progress(), timeout_s)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise WeightsError(f"Downloading {url} failed ({exc}). What was received is kept in "
                           f"{part} and the next attempt resumes from it. Or: {by_hand}") from exc
    os.replace(part, target)
    log.info("Downloaded %s", target)
    return target


def _download(url: str, part: Path, progress: Progress, timeout_s: float) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        # 416: nothing after byte ``have``. Complete if the server says the file has ``have``
        # bytes (an earlier attempt stopped before the rename); otherwise start again.
        if exc.headers.get("Content-Range", "") == f"bytes */{have}":
            return
        part.unlink()
        _download(url, part, progress, timeout_s)
        return
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        done = have
        with open(part, "ab" if have else "wb") as out:
            # read1 returns what has arrived, so an interrupted transfer keeps what it got.
            while chunk := response.read1(CHUNK_BYTES):
                out.write(chunk)
                done += len(chunk)
                fraction = done / total if total else 0.0
                progress("download", fraction, f"{done / 1e6:.0f} of "
                         f"{total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB")
            out.flush()
            os.fsync(out.fileno())
    if total is not None and done != total:
        raise OSError(f"the connection closed after {done} of {total} bytes")

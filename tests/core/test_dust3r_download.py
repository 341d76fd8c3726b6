"""Weights download against a local HTTP server (127.0.0.1 only): resume, cancel, no network."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from core.dust3r.download import CHUNK_BYTES, ensure_weights
from core.dust3r.registry import WEIGHTS
from core.errors import Cancelled, WeightsError
from core.progress import CancelToken, Progress

INFO = WEIGHTS["DUSt3R_ViTLarge_BaseDecoder_512_dpt"]
PAYLOAD = np.random.default_rng(0).integers(0, 256, 5 * CHUNK_BYTES + 12345, np.uint8).tobytes()


class Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD with Range support; ``server.cut_after`` drops the next transfer early."""

    def do_GET(self):
        srv = self.server
        start = 0
        range_header = self.headers.get("Range")
        srv.ranges.append(range_header)
        if range_header and srv.honour_range:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            body, srv.cut_after = body[: srv.cut_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.cut_after, srv.honour_range, srv.ranges = None, True, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/{INFO.pth_file}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_without_network_the_message_says_what_to_fetch_and_where(tmp_path):
    with pytest.raises(WeightsError) as err:
        ensure_weights(INFO, tmp_path / "weights", allow_network=False)
    message = str(err.value)
    assert INFO.pth_url in message and str(tmp_path / "weights" / INFO.pth_file) in message
    assert "online access" in message and not (tmp_path / "weights").exists()


def test_download_with_progress_and_atomic_rename(tmp_path, server):
    reports = []
    path = ensure_weights(INFO, tmp_path, True, Progress(lambda *r: reports.append(r)),
                          url=server.url)
    assert path == tmp_path / INFO.pth_file and path.read_bytes() == PAYLOAD
    assert list(tmp_path.iterdir()) == [path]  # no .part left
    fractions = [f for _, f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 6
    # Present now: returned without touching the network.
    assert ensure_weights(INFO, tmp_path, allow_network=False) == path


@pytest.mark.parametrize("honour_range", [True, False])
def test_interrupted_download_resumes(tmp_path, server, honour_range):
    server.honour_range = honour_range
    cut = server.cut_after = 2 * CHUNK_BYTES + 777
    with pytest.raises(WeightsError, match="resumes"):
        ensure_weights(INFO, tmp_path, True, url=server.url)
    part = tmp_path / (INFO.pth_file + ".part")
    assert not (tmp_path / INFO.pth_file).exists()
    assert 0 < part.stat().st_size <= cut
    kept = part.stat().st_size
    path = ensure_weights(INFO, tmp_path, True, url=server.url)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert server.ranges == [None, f"bytes={kept}-"]


def test_cancel_keeps_the_part_file_for_a_later_resume(tmp_path, server):
    token = CancelToken()

    def cancel_after_two_chunks(stage, fraction, message):
        if fraction > 1.5 * CHUNK_BYTES / len(PAYLOAD):
            token.cancel()

    with pytest.raises(Cancelled):
        ensure_weights(INFO, tmp_path, True, Progress(cancel_after_two_chunks, token),
                       url=server.url)
    part = tmp_path / (INFO.pth_file + ".part")
    assert not (tmp_path / INFO.pth_file).exists() and 0 < part.stat().st_size < len(PAYLOAD)
    assert ensure_weights(INFO, tmp_path, True, url=server.url).read_bytes() == PAYLOAD


def test_complete_part_file_is_only_renamed(tmp_path, server):
    (tmp_path / (INFO.pth_file + ".part")).write_bytes(PAYLOAD)
    assert ensure_weights(INFO, tmp_path, True, url=server.url).read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_unreachable_server_is_reported_with_the_manual_route(tmp_path, server):
    url = server.url
    server.shutdown()
    server.server_close()  # nothing listens on that loopback port any more
    with pytest.raises(WeightsError, match=f"Downloading {url} failed.*save it as"):
        ensure_weights(INFO, tmp_path, True, url=url, timeout_s=5)
    assert not (tmp_path / INFO.pth_file).exists()


def test_blender_side_modules_do_not_load_torch():
    """Blender's process imports these (download, registry, config) and must not load torch."""
    code = ("import sys, core.dust3r, core.dust3r.download, core.dust3r.config, "
            "core.dust3r.safetensors_io; core.dust3r.WEIGHTS; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                   check=True)

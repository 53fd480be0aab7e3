"""Helpers for the model-download tests: a local HTTP server (127.0.0.1 only; the real URLs are
never used) and a synthetic ``big-lama.zip``; the fixtures around them are in weights_fixtures.py.

The server serves files from a dict and can be told to cut the connection after N bytes, to answer
404, and to honour or ignore ``Range``; it records the Range header of every request. The archive
holds ``big-lama/models/best.ckpt`` (a Lightning-style checkpoint of the ``tiny`` config in the
official layout, with an OmegaConf-like object that ``weights_only`` refuses) and ``config.yaml``.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from glama_deploy.weights.registry import REGISTRY, ModelEntry

from .test_model import _Config, _official_ckpt


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None      # close the socket after sending this many body bytes
    not_found: bool = False           # answer 404 to everything
    honour_range: bool = True
    ranges: list[str | None] = field(default_factory=list)


class Server:
    def __init__(self) -> None:
        self.b = Behaviour()
        b = self.b

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                b.ranges.append(self.headers.get("Range"))
                data = b.files.get(self.path)
                if b.not_found or data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and b.honour_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/zip")
                self.end_headers()
                if b.cut_after is not None and b.cut_after < len(body):
                    self.wfile.write(body[:b.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(body)

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hung up early (refused size)
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


NAME = "test-lama"  # a registry entry the tests add (REGISTRY is restored after each)


def lama_zip(model: torch.nn.Module, tmp: Path, members: dict[str, bytes] | None = None) -> bytes:
    """A big-lama.zip-shaped archive around ``model``'s official-layout checkpoint."""
    ckpt = tmp / "best.ckpt"
    _official_ckpt(model, ckpt)
    obj = torch.load(ckpt, weights_only=True)
    obj["hyper_parameters"] = _Config(generator={"kind": "ffc_resnet"})  # what weights_only refuses
    torch.save(obj, ckpt)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(ckpt, "big-lama/models/best.ckpt")
        z.writestr("big-lama/config.yaml", "generator:\n  kind: ffc_resnet\n  n_blocks: 4\n")
        for name, data in (members or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def serve(lama_server, monkeypatch, data: bytes, *, sha: str | None = "auto", size: bool = True,
          config: str = "tiny") -> ModelEntry:
    """Register a model served by ``lama_server`` (REGISTRY is restored after the test)."""
    lama_server.b.files["/big-lama.zip"] = data
    entry = ModelEntry(name=NAME, config=config, format="lama-zip", parameters=0, licence="Apache-2.0",
                       description="test", good_at="tests", urls=(lama_server.url("/big-lama.zip"),),
                       size=len(data) if size else None,
                       sha256=hashlib.sha256(data).hexdigest() if sha == "auto" else sha)
    monkeypatch.setitem(REGISTRY, NAME, entry)
    return entry

"""A local HTTP server for the model-download tests (127.0.0.1 only; the real URLs are never used).

It serves files from a dict and can be told to cut the connection after N bytes, to answer 404,
and to honour or ignore ``Range``; it records the Range header of every request.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

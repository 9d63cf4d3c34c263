"""Tiles on a real HTTP server for tests: a directory served by the standard library's
http.server on a free port, optionally gzipped or trickled, in a background thread."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Handler(SimpleHTTPRequestHandler):
    mode = "plain"  # "gzip": every file gzipped; "trickle": one byte every 0.2 s

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return None

    def do_GET(self) -> None:  # noqa: N802 - the base's name
        if self.mode == "plain":
            super().do_GET()
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if self.mode == "gzip":
            data = gzip.compress(data)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.mode == "gzip":
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.mode == "trickle":
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(0.2)
        else:
            self.wfile.write(data)


@contextmanager
def serve_directory(root: Path, mode: str = "plain") -> Iterator[str]:
    """Serves `root` over HTTP; yields the base URL (no trailing slash)."""
    handler = type("Handler", (_Handler,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

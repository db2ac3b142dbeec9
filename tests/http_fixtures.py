"""A real HTTP server on 127.0.0.1 for remote-input tests: byte ranges, ETags, and servers that misbehave."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves a folder with Range support (SimpleHTTPRequestHandler has none).

    Path prefixes misbehave on purpose: `drop/` dies mid-file, `stall/` sends headers and then nothing for
    STALL_S, `forbidden/` answers 403, `flaky/` answers 503 while `flaky_left` counts down.
    """

    hits: list[tuple[str, str]] = []
    flaky_left = 0
    STALL_S = 8.0

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        type(self).hits.append((self.path, self.headers.get("Range", "")))
        if self.path.startswith("/forbidden/"):
            return self.send_error(403)
        if self.path.startswith("/flaky/") and type(self).flaky_left > 0:
            type(self).flaky_left -= 1
            return self.send_error(503)
        name = self.path.lstrip("/")
        for prefix in ("drop/", "stall/", "flaky/"):
            name = name.removeprefix(prefix)
        path = Path(self.directory) / name
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        if rng := self.headers.get("Range"):
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), min(int(last or len(data) - 1), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if head:
            return
        body = data[start : end + 1]
        if self.path.startswith("/stall/"):
            self.wfile.flush()
            time.sleep(self.STALL_S)  # headers sent, then silence: only a read timeout ends this
            return
        if self.path.startswith("/drop/"):
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection dies mid-file
            return
        self.wfile.write(body)


@contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """Serve `root` with RangeHandler (its counters reset); yields the base URL."""
    RangeHandler.hits, RangeHandler.flaky_left = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: RangeHandler(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

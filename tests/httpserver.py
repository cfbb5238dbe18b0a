"""A real HTTP server on loopback serving a directory, for repository tests.

Like the web servers that host WAPT repositories, it answers conditional requests
(`If-Modified-Since`, with `Last-Modified`) and byte ranges (`Range: bytes=N-`, 206), and it
counts the requests it served per path so tests can tell what was fetched.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    counter: Counter[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.counter[self.path.split("?")[0]] += 1
        range_header = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if range_header.startswith("bytes=") and path.is_file():
            self._send_range(path, range_header)
            return
        super().do_GET()

    def _send_range(self, path: Path, header: str) -> None:
        size = path.stat().st_size
        start_text, _, end_text = header[len("bytes=") :].partition("-")
        start = int(start_text or 0)
        end = int(end_text) if end_text else size - 1
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        end = min(end, size - 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            self.wfile.write(f.read(end - start + 1))


@contextmanager
def serve_directory(
    directory: Path, counter: Counter[str] | None = None, *, handler: type[_Handler] = _Handler
) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 on a free port; yield the base URL.

    `handler` may be a subclass of this module's handler that answers more methods.
    """
    handler_class = type(
        "Handler", (handler,), {"counter": counter if counter is not None else Counter()}
    )
    handler = functools.partial(handler_class, directory=os.fspath(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

"""A static file server for web packages: the headers and MIME types onnxruntime-web needs.

onnxruntime-web runs WASM threads only in a cross-origin isolated page (SharedArrayBuffer):
every response carries `Cross-Origin-Opener-Policy: same-origin` and
`Cross-Origin-Embedder-Policy: require-corp` (+ `Cross-Origin-Resource-Policy:
same-origin`). Module scripts must be served as JavaScript (`.mjs` included) and `.wasm` as
`application/wasm` (streaming compilation refuses anything else). Localhost only by
default; nothing is cached, so a rebuilt package is what the next reload gets.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MIME_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".wasm": "application/wasm",
    ".json": "application/json; charset=utf-8", ".jinja": "text/plain; charset=utf-8",
    ".onnx": "application/octet-stream", ".onnx_data": "application/octet-stream",
}
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def end_headers(self) -> None:
        for name, value in HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def guess_type(self, path) -> str:
        suffix = Path(str(path)).suffix.lower()
        return MIME_TYPES.get(suffix) or super().guess_type(path)

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        if self.server.log_requests:
            super().log_message(format, *args)


class WebServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: str | Path, host: str = "127.0.0.1", port: int = 0,
                 *, log_requests: bool = False) -> None:
        handler = functools.partial(_Handler, directory=str(directory))
        super().__init__((host, port), handler)
        self.log_requests = log_requests
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}/"

    def start(self) -> WebServer:
        """Serve from a daemon thread (tests, the browser engine); close() stops it."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()

"""`gemma-edge serve DIR`: a web package on a local static server (runtime_check.web_server:
COOP/COEP for onnxruntime-web's WASM threads, JavaScript and WASM MIME types).

The package is verified against its manifest first (a tampered file is never served), and
only web packages are served: an artifact or another package kind is a one-line error.
"""

from __future__ import annotations

import argparse
import errno
import json
from pathlib import Path

from foundation.errors import GemmaEdgeError


def open_server(directory: str | Path, *, host: str = "127.0.0.1", port: int = 8000):
    """A WebServer for a verified web package (not yet serving: .start() or serve_forever())."""
    from foundation.integrity import verify_package
    from runtime_check.web_server import WebServer

    directory = Path(directory)
    if not directory.is_dir():
        raise GemmaEdgeError(f"{directory} is not a directory",
                             "pass a web package: gemma-edge package ARTIFACT --as web")
    manifest = verify_package(directory)
    if manifest.get("package") != "web":
        raise GemmaEdgeError(f"{directory} is a {manifest.get('package')} package, not a web one",
                             "package the ONNX artifact with --as web, then serve that")
    if not 0 <= port <= 65535:
        raise GemmaEdgeError(f"port {port} is not a TCP port", "pass --port 0..65535 (0: any free)")
    try:
        return WebServer(directory, host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise GemmaEdgeError(f"port {port} on {host} is already in use",
                                 "pass another --port (0 picks a free one)") from None
        raise GemmaEdgeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                             "pass --host 127.0.0.1 and a free --port") from None


def cmd_serve(args: argparse.Namespace) -> int:
    server = open_server(args.package, host=args.host, port=args.port)
    server.log_requests = not args.quiet and not args.json
    if args.json:
        print(json.dumps({"url": server.url + "index.html", "package": str(args.package)}),
              flush=True)
    elif not args.quiet:
        print(f"serving {args.package} at {server.url}index.html (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0

"""Open the right runner for an artifact directory, from its manifest's format."""

from __future__ import annotations

from pathlib import Path

from foundation.artifacts import require_manifest
from foundation.formats import get_format, resolve


def open_runner(artifact: str | Path, *, threads: int | None = None):
    path = Path(artifact)
    fmt = get_format(require_manifest(path).get("format"), f"artifact format in {path}")
    return resolve(fmt.runner)(path, threads=threads)

"""Open the right runner for an artifact directory, from its manifest's format."""

from __future__ import annotations

from pathlib import Path

from foundation.artifacts import require_manifest
from foundation.families import implementation
from foundation.formats import get_format, resolve


def open_runner(artifact: str | Path, *, threads: int | None = None):
    path = Path(artifact)
    manifest = require_manifest(path)
    fmt = get_format(manifest.get("format"), f"artifact format in {path}")
    family = manifest.get("inputs", {}).get("family")
    return resolve(implementation(family, f"{fmt.name}.runner", fmt.runner))(path, threads=threads)

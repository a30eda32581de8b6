"""Open the right runner for an artifact directory, from its manifest's format."""

from __future__ import annotations

from pathlib import Path

from gemma_edge.artifacts import require_manifest
from gemma_edge.errors import GemmaEdgeError


def open_runner(artifact: str | Path, *, threads: int | None = None):
    path = Path(artifact)
    fmt = require_manifest(path).get("format")
    if fmt == "onnx":
        from runtime_check.onnx_runner import OnnxRunner

        return OnnxRunner(path, threads=threads)
    if fmt == "tflite":
        from runtime_check.litert_runner import LiteRTRunner

        return LiteRTRunner(path, threads=threads)
    raise GemmaEdgeError(f"{path}: unknown artifact format '{fmt}'", "expected onnx or tflite")

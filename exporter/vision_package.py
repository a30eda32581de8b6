"""Packages of vision-language exports: not built yet, refused in one line (docs/vision.md).

The family names this as its `onnx-bundle.builder` and `litertlm.builder`, so `package`
never writes a bundle without the vision graphs (the text builders would copy only
model.onnx / model.tflite's text signatures and the tokenizer).
"""

from __future__ import annotations

from pathlib import Path

from foundation.errors import GemmaEdgeError


def refuse_vision_package(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    raise GemmaEdgeError(f"{artifact} is a vision-language export; gemma-edge does not package "
                         "those yet", "ship the checked export directory itself (docs/vision.md)")

"""The engine of a RecurrentGemma package (exporter/recurrent_package.py): our ONNX runner
with the package's tokenizer and state_io.json, behind the engines' interface."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime_check.engines import GenaiEngine
from runtime_check.recurrent_runner import RecurrentOnnxRunner


class _LastLogits(RecurrentOnnxRunner):
    def prefill_last(self, ids):
        return self.prefill(ids)[-1]


class RecurrentEngine(GenaiEngine):
    """GenaiEngine's greedy loop and tokenizer handling over RecurrentOnnxRunner."""

    name = "onnxruntime (recurrent state)"

    def __init__(self, package_dir: Path, manifest: dict, *, threads: int,
                 max_tokens: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.manifest = manifest
        self.model_dir = Path(package_dir)
        self.runner = _LastLogits(self.model_dir, threads=threads)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.bos = manifest["tokens"]["bos_token_id"]
        self.stops = set(manifest["tokens"]["stop_tokens"].values())

    def token_metadata(self) -> dict[str, Any]:
        doc = json.loads((self.model_dir / "state_io.json").read_text())
        return {"bos_token_id": doc["bos_token_id"],
                "stop_token_ids": [[t] for t in doc["stop_token_ids"]]}

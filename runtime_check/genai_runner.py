"""onnxruntime-genai runner: any directory with genai_config.json (our ONNX bundles, or
onnxruntime-genai's own model builder output, which is how peers are measured).

The engine keeps the cache and exposes the logits of the last appended token only, so
`prefill` returns per-position logits by appending one token at a time (exact, used for
parity), while `prefill_last` appends the whole prompt in one call (what an app does,
used for latency and generation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.errors import GemmaEdgeError, MissingExtraError

CONFIG = "genai_config.json"


class GenaiRunner:
    name = "onnxruntime-genai"

    def __init__(self, model_dir: str | Path, *, threads: int | None = None,
                 max_length: int | None = None) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise MissingExtraError("onnx", "onnxruntime-genai") from None
        model_dir = Path(model_dir)
        config_file = model_dir / CONFIG
        if not config_file.is_file():
            raise GemmaEdgeError(f"{model_dir} has no {CONFIG}",
                                 "package it with `gemma-edge package --as onnx-bundle`")
        self._og = og
        config = og.Config(str(model_dir))
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        limit = json.loads(config_file.read_text())["search"].get("max_length", 1024)
        # GroupQueryAttention needs max_length >= the sliding window (docs/reference.md, Stack and pitfalls)
        self.max_length = max_length or limit
        self.cache_len = self.max_length
        self.reset()

    def reset(self) -> None:
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=self.max_length)
        self.generator = self._og.Generator(self.model, params)

    def _append(self, token_ids: Sequence[int]) -> np.ndarray:
        self.generator.append_tokens(np.asarray(list(token_ids), dtype=np.int32))
        return np.asarray(self.generator.get_logits(), dtype=np.float32).reshape(-1)

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        return np.stack([self._append([t]) for t in token_ids])

    def prefill_last(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._append(token_ids)

    def decode(self, token_id: int) -> np.ndarray:
        return self._append([int(token_id)])

    def close(self) -> None:
        self.generator = None
        self.model = None

"""LiteRT runner for RecurrentGemma exports (exporter/recurrent_tflite.py), behind the runner
protocol: the state goes in and comes out of every signature call; a prompt runs as
prefill_<T> chunks, then the remainder as decode steps (no padding: a padded token would
enter the recurrence). The state has a fixed size: any context fits (`cache_len` None)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS
from runtime_check.runner import model_file


def _present(name: str) -> str:
    if name.startswith(("past_conv_", "past_recurrent_")):
        return "present_" + name.removeprefix("past_")
    return "present_" + name.removeprefix("past_key_values_")


class RecurrentLiteRTRunner:
    name = "litert"
    cache_len = None

    def __init__(self, model: str | Path, *, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = model_file(model, FORMATS["tflite"].model_file, "TFLite")
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        signatures = self.interpreter.get_signature_list()
        decode = signatures.get("decode", {})
        self._state = [n for n in decode.get("inputs", []) if n.startswith("past_")]
        if not any(n.startswith("past_recurrent_") for n in self._state):
            raise GemmaEdgeError(f"{path} has no recurrent state inputs (past_recurrent_*)",
                                 "pass a RecurrentGemma LiteRT export")
        self.prefill_lengths = sorted((int(s.split("_", 1)[1]) for s in signatures
                                       if s.startswith("prefill_")), reverse=True)
        self._runners = {s: self.interpreter.get_signature_runner(s) for s in signatures}
        details = self._runners["decode"].get_input_details()
        self._shapes = {n: tuple(details[n]["shape"]) for n in self._state}
        self.reset()

    def reset(self) -> None:
        self._pos = 0
        self._values = {n: np.zeros(self._shapes[n], np.float32) for n in self._state}

    def _run(self, signature: str, tokens: list[int]) -> np.ndarray:
        n = len(tokens)
        out = self._runners[signature](
            input_ids=np.asarray([tokens], np.int32),
            position_ids=np.arange(self._pos, self._pos + n, dtype=np.int32)[None],
            **self._values)
        self._values = {name: np.array(out[_present(name)]) for name in self._state}
        self._pos += n
        return np.array(out["logits"][0], dtype=np.float32)

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = [int(t) for t in token_ids]
        if not ids:
            raise ValueError("prefill needs at least one token")
        rows, i = [], 0
        while i < len(ids):
            size = next((t for t in self.prefill_lengths if t <= len(ids) - i), 1)
            rows.append(self._run(f"prefill_{size}" if size > 1 else "decode", ids[i:i + size]))
            i += size
        return np.concatenate(rows, axis=0)

    def decode(self, token_id: int) -> np.ndarray:
        return self._run("decode", [int(token_id)])[0]

    @property
    def cached_tokens(self) -> int:
        return self._pos

    def close(self) -> None:
        self._runners = {}
        self.interpreter = None

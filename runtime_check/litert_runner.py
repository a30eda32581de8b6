"""LiteRT interpreter runner over a gemma-edge TFLite export's signatures.

`prefill` picks the smallest `prefill_<T>` signature that holds the remaining tokens
(padding the last chunk; padded slots stay masked until real tokens overwrite them)
and chains chunks for longer prompts; `decode` runs the `decode` signature. The
caller-visible contract is the runner protocol, so parity code is the same as for
torch and onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.errors import GemmaEdgeError, MissingExtraError
from foundation.formats import FORMATS
from runtime_check.runner import model_file

MODEL_FILE = FORMATS["tflite"].model_file


def _causal_mask(positions: np.ndarray, cache_len: int) -> np.ndarray:
    allowed = np.arange(cache_len)[None, :] <= positions[:, None]
    return np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)[None, None]


class LiteRTRunner:
    name = "litert"

    def __init__(self, model: str | Path, *, threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise MissingExtraError("tflite", "ai-edge-litert") from None
        path = model_file(model, MODEL_FILE, "TFLite")
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        signatures = self.interpreter.get_signature_list()
        if "decode" not in signatures or not any(s.startswith("prefill_") for s in signatures):
            raise GemmaEdgeError(f"{path} has no prefill_<T>/decode signatures",
                                 "export it with gemma-edge export --format tflite")
        self.prefill_lengths = sorted(int(s.split("_", 1)[1]) for s in signatures
                                      if s.startswith("prefill_"))
        self._runners = {name: self.interpreter.get_signature_runner(name) for name in signatures}
        details = self._runners["decode"].get_input_details()
        self._cache_specs = {name: tuple(d["shape"]) for name, d in details.items()
                             if name.startswith("kv_cache_")}
        self.cache_len = int(details["mask"]["shape"][-1])  # mask [1, 1, T, C], any cache layout
        self.reset()

    def reset(self) -> None:
        self._caches = {n: np.zeros(s, dtype=np.float32) for n, s in self._cache_specs.items()}
        self._pos = 0

    def _run(self, signature: str, tokens: np.ndarray, length: int) -> np.ndarray:
        positions = np.arange(self._pos, self._pos + len(tokens), dtype=np.int32)
        if positions[-1] >= self.cache_len:
            raise GemmaEdgeError(
                f"context of {self._pos + length} tokens exceeds the KV cache of {self.cache_len}",
                "export with a larger --cache-length")
        out = self._runners[signature](
            tokens=tokens[None].astype(np.int32), input_pos=positions,
            mask=_causal_mask(positions, self.cache_len), **self._caches)
        self._caches = {name: out[name] for name in self._cache_specs}
        self._pos += length
        return out["logits"][0, :length]

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(list(token_ids), dtype=np.int32)
        if ids.size == 0:
            raise ValueError("prefill needs at least one token")
        rows, i = [], 0
        while i < ids.size:
            size = self._chunk_size(ids.size - i)
            if size == 0:  # the tail fits the cache but no padded signature does: step it
                rows.extend(self.decode(int(t))[None, :] for t in ids[i:])
                break
            chunk = ids[i:i + size]
            padded = np.zeros(size, dtype=np.int32)
            padded[: chunk.size] = chunk
            rows.append(self._run(f"prefill_{size}", padded, chunk.size))
            i += chunk.size
        return np.concatenate(rows, axis=0)

    def _chunk_size(self, remaining: int) -> int:
        """Smallest signature that takes all remaining tokens, else the largest that fits;
        0 when none fits padded but the tokens do (the cache's last slots)."""
        room = [t for t in self.prefill_lengths if self._pos + t <= self.cache_len]
        whole = [t for t in room if t >= remaining]
        if whole:
            return whole[0]
        partial = [t for t in room if t <= remaining]
        if not partial and self._pos + remaining <= self.cache_len:
            return 0
        if not partial:
            raise GemmaEdgeError(
                f"context of {self._pos + remaining} tokens exceeds the KV cache of "
                f"{self.cache_len}", "export with a larger --cache-length")
        return partial[-1]

    def decode(self, token_id: int) -> np.ndarray:
        return self._run("decode", np.asarray([token_id], dtype=np.int32), 1)[0]

    def close(self) -> None:
        self._runners = {}
        self._caches = {}

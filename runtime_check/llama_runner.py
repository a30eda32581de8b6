"""llama.cpp (llama-cpp-python) runner for GGUF artifacts, and the engine of Ollama packages.

`LlamaRunner` is the runner protocol (runtime_check/runner.py) over llama.cpp's own C API
(llama-cpp-python's thin `_internals` wrappers, not its `Llama` class, which keeps an
n_ctx x vocab score matrix: 1 GiB for the 270M at 1,024 tokens): a batch asks logits for
every token, so `prefill` returns one row per token as parity needs.

The KV cache is F32 and flash attention off, so an F32 GGUF is compared with the torch
reference at float32 precision and a quantized one shows its weights' error only
(llama.cpp's default F16 cache adds its own; docs/gguf.md). F32 is still not torch's
float32: ggml evaluates GELU through a float16 table, about half of the 1.8e-3 max
|dlogit| on the tiny Gemma 3 (docs/gguf.md). Sliding-window layers keep a
full cache (`swa_full`), so a re-prefill after decode steps sees every position.

Weights stay in llama.cpp's plain CPU buffers (`use_extra_bufts` off): no AMX tiles and no
repacked layouts. On Sapphire Rapids CPUs (AMX) the AMX matmul segfaults in this
llama.cpp (the built-in 270M's Q4_K_M and a tiny Q4_0 alike, with or without torch in the
process), and the repacked kernels add a summation order of their own, so a check gives
the same numbers on every x86 machine. The cost is speed only (docs/gguf.md).

`LlamaEngine` runs an Ollama package (`package --as ollama`) the way Ollama does: llama.cpp
tokenizes with the GGUF's own tokenizer metadata, adds BOS, stops at end-of-generation
tokens the file declares.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError, MissingExtraError
from foundation.formats import FORMATS
from runtime_check.runner import model_file

BATCH = 256  # tokens per llama_decode: logits of a batch are BATCH x vocab floats
DEFAULT_CONTEXT = 4096


def _llama_cpp():
    try:
        import llama_cpp
        import llama_cpp._internals as internals
    except ImportError:
        raise MissingExtraError("gguf", "llama-cpp-python") from None
    from llama_cpp import _logger

    _logger.set_verbose(False)  # llama.cpp's load chatter, unless it is an error
    return llama_cpp, internals


class LlamaRunner:
    name = "llama.cpp"

    def __init__(self, model: str | Path, *, threads: int | None = None,
                 context: int = DEFAULT_CONTEXT) -> None:
        llama_cpp, internals = _llama_cpp()
        path = model_file(model, FORMATS["gguf"].model_file, "GGUF")
        self._llama = llama_cpp
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_extra_bufts = False
        try:
            self.model = internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        except ValueError as exc:
            raise GemmaEdgeError(f"llama.cpp could not load {path} ({exc})",
                                 "re-export it with `gemma-edge export --format gguf`") from None
        self.n_vocab = self.model.n_vocab()
        self.context = min(context, self.model.n_ctx_train())
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.context
        cparams.n_batch = cparams.n_ubatch = BATCH
        cparams.n_threads = cparams.n_threads_batch = threads or 2
        cparams.type_k = cparams.type_v = llama_cpp.GGML_TYPE_F32
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.swa_full = True
        cparams.no_perf = True
        self.ctx = internals.LlamaContext(model=self.model, params=cparams, verbose=False)
        self.batch = internals.LlamaBatch(n_tokens=BATCH, embd=0, n_seq_max=1, verbose=False)
        self._pos = 0

    @property
    def cached_tokens(self) -> int:
        return self._pos

    def reset(self) -> None:
        self.ctx.kv_cache_clear()
        self._pos = 0

    def _step(self, token_ids: Sequence[int], *, all_logits: bool = True) -> np.ndarray:
        if not token_ids:
            raise ValueError("prefill needs at least one token")
        if self._pos + len(token_ids) > self.context:
            raise GemmaEdgeError(f"{self._pos + len(token_ids)} tokens do not fit llama.cpp's "
                                 f"context of {self.context}", "pass a shorter text")
        rows = []
        for start in range(0, len(token_ids), BATCH):
            chunk = [int(t) for t in token_ids[start:start + BATCH]]
            self.batch.set_batch(chunk, n_past=self._pos, logits_all=all_logits)
            self.ctx.decode(self.batch)
            n = len(chunk) if all_logits else 1
            out = np.ctypeslib.as_array(self.ctx.get_logits(), shape=(n * self.n_vocab,))
            rows.append(out.reshape(n, self.n_vocab).copy())
            self._pos += len(chunk)
        return np.concatenate(rows, axis=0) if all_logits else rows[-1]

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._step(list(token_ids))

    def prefill_last(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits of the last token only (what generation needs)."""
        return self._step(list(token_ids), all_logits=False)[-1]

    def decode(self, token_id: int) -> np.ndarray:
        return self._step([int(token_id)])[0]

    # llama.cpp's own tokenizer, read from the GGUF's metadata
    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos, True)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.model.detokenize(list(ids)).decode("utf-8", errors="replace")

    def token_metadata(self) -> dict[str, Any]:
        """BOS and the stop tokens the GGUF declares (eos, eot), as llama.cpp read them. (Its
        end-of-generation set also guesses tokens by their text: on the 270M it adds id 212,
        which Gemma never emits; the engine stops on the declared ones, as the Modelfile does.)"""
        stops = sorted({t for t in (self.model.token_eos(), self.model.token_eot()) if t >= 0})
        return {"bos_token_id": self.model.token_bos(), "add_bos": self.model.add_bos_token(),
                "stop_token_ids": [[t] for t in stops]}

    def chat_template(self) -> str | None:
        buf = self._llama.llama_model_chat_template(self.model.model, None)
        return buf.decode("utf-8") if buf else None

    def close(self) -> None:
        for part in ("batch", "ctx", "model"):
            obj = getattr(self, part, None)
            if obj is not None:
                obj.close()
                setattr(self, part, None)


class LlamaEngine:
    """An Ollama package in llama.cpp: the model file Ollama's FROM points at, tokenized and
    stopped by the GGUF's own metadata (what Ollama reads)."""

    name = "llama.cpp"

    def __init__(self, package_dir: Path, manifest: dict, *, threads: int,
                 max_tokens: int | None = None) -> None:
        self.manifest = manifest
        self.runner = LlamaRunner(package_dir, threads=threads)
        self.stops = {ids[0] for ids in self.runner.token_metadata()["stop_token_ids"]}
        self.bos = self.runner.model.token_bos()  # `gemma-edge bench` times runner.prefill_last

    def token_metadata(self) -> dict[str, Any]:
        return self.runner.token_metadata()

    def tokenize(self, text: str) -> list[int]:
        return self.runner.tokenize(text, add_bos=False)

    def generate(self, prompt: str, max_new_tokens: int, *, chat: bool = False) -> Iterator[str]:
        if chat:
            from foundation.chat import format_chat

            prompt = format_chat([{"role": "user", "content": prompt}],
                                 add_generation_prompt=True, bos_token="")
        ids = self.runner.tokenize(prompt, add_bos=True)
        self.runner.reset()
        logits = self.runner.prefill_last(ids)
        from runtime_check.generation import stream_pieces

        yield from stream_pieces(logits, self.runner.decode, self.runner.detokenize, self.stops,
                                 max_new_tokens)

    def close(self) -> None:
        self.runner.close()

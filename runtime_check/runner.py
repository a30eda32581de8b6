"""The runner protocol every backend implements, and the loops that only need it.

A runner owns one sequence's KV cache. `prefill` appends tokens and returns the logits
at every one of them; `decode` appends one token and returns its logits. Logits are
fp32 numpy arrays, so parity code compares torch, LiteRT and onnxruntime the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from foundation.errors import GemmaEdgeError


@runtime_checkable
class Runner(Protocol):
    name: str

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        """Append tokens to the cache; logits [len(token_ids), vocab]."""

    def decode(self, token_id: int) -> np.ndarray:
        """Append one token; logits [vocab]."""

    def reset(self) -> None:
        """Forget the sequence (empty cache, position 0)."""

    def close(self) -> None:
        """Release the runtime's resources."""


def model_file(model: str | Path, filename: str, fmt: str) -> Path:
    """The model file of an export directory (or the file itself), or a clear error."""
    path = Path(model)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise GemmaEdgeError(f"no {fmt} model at {path}",
                             f"pass a {fmt} export directory (gemma-edge export --format "
                             f"{fmt.lower()}) or a {filename} file")
    return path


def greedy_steps(runner: Runner, prompt_ids: Sequence[int], max_new_tokens: int,
                 stop_ids: Iterable[int] = ()) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (greedy token, the logits it was chosen from) after `prompt_ids`; a stop token
    is yielded, then generation ends."""
    stop = set(stop_ids)
    runner.reset()
    logits = runner.prefill(list(prompt_ids))[-1]
    for step in range(max_new_tokens):
        token = int(np.argmax(logits))
        yield token, logits
        if token in stop or step == max_new_tokens - 1:
            return
        logits = runner.decode(token)


def greedy_generate(runner: Runner, prompt_ids: Sequence[int], max_new_tokens: int,
                    stop_ids: Iterable[int] = ()) -> Iterator[int]:
    """Yield greedy tokens after `prompt_ids`; a stop token is yielded, then generation ends."""
    return (token for token, _logits in greedy_steps(runner, prompt_ids, max_new_tokens, stop_ids))


def greedy_margins(runner: Runner, prompt_ids: Sequence[int],
                   max_new_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy tokens after `prompt_ids` and, per step, the gap between the top two logits:
    where it is small, any quantization may flip the choice (a near-tie, not a defect)."""
    tokens, margins = [], []
    for token, logits in greedy_steps(runner, prompt_ids, max_new_tokens):
        top2 = np.partition(np.asarray(logits, np.float64), -2)[-2:]
        tokens.append(token)
        margins.append(float(top2[1] - top2[0]))
    return tokens, margins


def teacher_forced_logits(runner: Runner, token_ids: Sequence[int], prefill_len: int,
                          decode_steps: int | None = None) -> np.ndarray:
    """Logits at every position: prefill the first `prefill_len` tokens, decode the next
    `decode_steps` one by one (default: all the rest), then prefill what is left onto the
    cache the decode steps wrote.

    This exercises both entry points and the cache between them in the order an
    on-device engine does (a chat's next turn is prefilled after decoding the last).
    """
    runner.reset()
    rows = [runner.prefill(list(token_ids[:prefill_len]))]
    stop = len(token_ids) if decode_steps is None else min(len(token_ids), prefill_len + decode_steps)
    rows.extend(runner.decode(int(t))[None, :] for t in token_ids[prefill_len:stop])
    if stop < len(token_ids):
        rows.append(runner.prefill(list(token_ids[stop:])))
    return np.concatenate(rows, axis=0)


class StepRunner:
    """The runner protocol's token calls for a runner whose `_step(ids)` runs the graph on
    the next tokens (advancing `_pos`) and returns their logits [n, vocab]."""

    _pos = 0

    def _step(self, token_ids: list[int]) -> np.ndarray:
        raise NotImplementedError

    @property
    def cached_tokens(self) -> int:
        return self._pos

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._step(list(token_ids))

    def decode(self, token_id: int) -> np.ndarray:
        return self._step([int(token_id)])[0]

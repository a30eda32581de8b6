"""Runners for RecurrentGemma behind the runner protocol (runtime_check.runner).

RecurrentOnnxRunner runs an export whose state is graph I/O (exporter/recurrent_onnx.py):
the state's layout comes from the graph's own inputs, each step's `present_*` OrtValues
are bound as the next step's `past_*`, never copied through numpy; only the logits come
back. The state has a fixed size, so memory and a decode step's cost do not grow with the
position, and the context is unbounded (`cache_len` None).

RecurrentTorchRunner is the reference: transformers' own modules, whose state lives in the
model. A multi-token call after position 0 goes in as decode steps, because transformers'
prefill path restarts the conv from zeros and so drops the last conv1d_width - 1 inputs
(measured: logit errors of 0.07 on the tiny model); its decode steps are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS
from runtime_check.onnx_runner import ort_session
from runtime_check.runner import model_file
from runtime_check.torch_runner import TorchRunner

PREFILL_CHUNK = 64  # tokens per call: the graph's parallel scan holds S * S * lru_width floats


class RecurrentOnnxRunner:
    name = "onnxruntime"
    cache_len = None  # the state does not grow: any context fits

    def __init__(self, model: str | Path, *, threads: int | None = None) -> None:
        path = model_file(model, FORMATS["onnx"].model_file, "ONNX")
        self._ort, self.session = ort_session(path, threads)
        self._tensors = state_tensors(self.session)
        if not self._tensors:
            raise GemmaEdgeError(f"{path} has no recurrent state inputs (past_conv.*, "
                                 "past_recurrent.*)", "pass a RecurrentGemma ONNX export "
                                 "(gemma-edge export of a recurrent_gemma source)")
        self.chunk = PREFILL_CHUNK
        self._zeros = [self._ort.OrtValue.ortvalue_from_numpy(np.zeros(t["shape"], np.float32))
                       for t in self._tensors]
        self.reset()

    def reset(self) -> None:
        self._pos = 0
        self._state = list(self._zeros)  # never written: every step binds fresh outputs

    @property
    def cached_tokens(self) -> int:
        return self._pos

    def _step(self, token_ids: Sequence[int]) -> np.ndarray:
        n = len(token_ids)
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.asarray([token_ids], dtype=np.int64))
        binding.bind_cpu_input("position_ids",
                               np.arange(self._pos, self._pos + n, dtype=np.int64)[None])
        for tensor, value in zip(self._tensors, self._state, strict=True):
            binding.bind_ortvalue_input(tensor["input"], value)
        binding.bind_output("logits", "cpu")
        for tensor in self._tensors:
            binding.bind_output(tensor["output"], "cpu")
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        self._state = list(outputs[1:])
        self._pos += n
        return outputs[0].numpy()[0]

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = [int(t) for t in token_ids]
        if not ids:
            raise ValueError("prefill needs at least one token")
        rows = [self._step(ids[i:i + self.chunk]) for i in range(0, len(ids), self.chunk)]
        return np.concatenate(rows, axis=0)

    def decode(self, token_id: int) -> np.ndarray:
        return self._step([int(token_id)])[0]

    def close(self) -> None:
        self._state, self._zeros = [], []
        self.session = None


def state_tensors(session) -> list[dict]:
    """The state I/O of a recurrent graph, from its own inputs (a quantized graph too):
    past_conv.{i} -> present_conv.{i}, past_recurrent.{i} -> present_recurrent.{i},
    past_key_values.{i}.key -> present.{i}.key; [] when there is none."""
    outputs = {o.name for o in session.get_outputs()}
    tensors = []
    for value in session.get_inputs():
        name = value.name
        if name.startswith(("past_conv.", "past_recurrent.")):
            out = "present_" + name.removeprefix("past_")
        elif name.startswith("past_key_values."):
            out = "present." + name.removeprefix("past_key_values.")
        else:
            continue
        if out not in outputs or not all(isinstance(d, int) for d in value.shape):
            return []  # not the fixed-size state of exporter/recurrent_onnx.py
        tensors.append({"input": name, "output": out, "shape": list(value.shape)})
    return tensors if any(t["input"].startswith("past_recurrent.") for t in tensors) else []


class RecurrentTorchRunner(TorchRunner):
    """transformers' RecurrentGemmaForCausalLM, prefill after position 0 as decode steps."""

    def _step(self, token_ids: Sequence[int]) -> np.ndarray:
        if self._pos == 0 or len(token_ids) == 1:
            return super()._step(token_ids)
        return np.concatenate([super(RecurrentTorchRunner, self)._step([int(t)])
                               for t in token_ids], axis=0)

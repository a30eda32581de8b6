"""onnxruntime runner for gemma-edge ONNX decoders (and graphs with the same I/O names).

The KV cache stays inside onnxruntime: each step's `present.*` OrtValues are bound as
the next step's `past_key_values.*` through IO binding, never copied through numpy.
Only the logits come back to Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gemma_edge.errors import MissingExtraError
from runtime_check.runner import model_file


class OnnxRunner:
    name = "onnxruntime"

    def __init__(self, model: str | Path, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingExtraError("onnx", "onnxruntime") from None
        path = model_file(model, "model.onnx", "ONNX")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self._ort = ort
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self._output_names = [o.name for o in self.session.get_outputs()]
        first = inputs[self._past_names[0]].shape  # [1, kv_heads, past, head_dim]
        self._empty = np.zeros((1, int(first[1]), 0, int(first[3])), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        empty = self._ort.OrtValue.ortvalue_from_numpy(self._empty)
        self._past = [empty] * len(self._past_names)
        self._pos = 0

    def _step(self, token_ids: Sequence[int]) -> np.ndarray:
        n = len(token_ids)
        if n == 0:
            raise ValueError("prefill needs at least one token")
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.asarray([token_ids], dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ones((1, self._pos + n), dtype=np.int64))
        binding.bind_cpu_input("position_ids",
                               np.arange(self._pos, self._pos + n, dtype=np.int64)[None])
        for name, value in zip(self._past_names, self._past, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        self._past = list(outputs[1:])
        self._pos += n
        return outputs[0].numpy()[0]

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._step(list(token_ids))

    def decode(self, token_id: int) -> np.ndarray:
        return self._step([int(token_id)])[0]

    def close(self) -> None:
        self._past = []
        self.session = None

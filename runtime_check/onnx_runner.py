"""onnxruntime runner for gemma-edge ONNX decoders (and graphs with the same I/O names).

The KV cache stays inside onnxruntime, never copied through numpy; only the logits come
back to Python. Graphs whose attention is GroupQueryAttention (gemma-edge exports) run the
way onnxruntime-genai runs them (`past_present_share_buffer`): one buffer per cache tensor,
bound as both past and present, which the op appends into in place; the buffer doubles
when full. Other graphs grow the cache: each step's `present.*` OrtValues are bound as the
next step's `past_key_values.*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.errors import MissingExtraError
from foundation.formats import FORMATS
from runtime_check.runner import StepRunner, model_file


def ort_session(path: str | Path, threads: int | None = None):
    """(onnxruntime module, a CPU InferenceSession of `path`) with every graph optimization,
    as every gemma-edge onnxruntime runner opens its graphs."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingExtraError("onnx", "onnxruntime") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort, ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRunner(StepRunner):
    name = "onnxruntime"

    def __init__(self, model: str | Path, *, threads: int | None = None) -> None:
        path = model_file(model, FORMATS["onnx"].model_file, "ONNX")
        self._ort, self.session = ort_session(path, threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._past_names = [n for n in inputs if n.startswith("past_key_values.")]
        # present.{i}.key/value for past_key_values.{i}.key/value, in the same order
        self._present_names = [n.replace("past_key_values.", "present.") for n in self._past_names]
        first = inputs[self._past_names[0]].shape  # [1, kv_heads, past, head_dim]
        self._cache_dims = (int(first[1]), int(first[3]))
        self.shared_buffer = _appends_in_place(path)
        self.reset()

    def reset(self) -> None:
        self._pos = 0
        if self.shared_buffer and getattr(self, "_past", None):
            return  # keep the buffers: the op reads only the first attention_mask.sum() entries
        self._past = [self._ort.OrtValue.ortvalue_from_numpy(self._zeros(0))] * len(self._past_names)

    def _zeros(self, length: int) -> np.ndarray:
        kv_heads, head_dim = self._cache_dims
        return np.zeros((1, kv_heads, length, head_dim), dtype=np.float32)

    def _reserve(self, total: int) -> None:
        """Shared buffers: room for `total` positions, keeping the cache written so far."""
        if self._past[0].shape()[2] >= total:
            return
        grown = []
        for value in self._past:
            new = self._zeros(max(256, 2 * total))
            new[:, :, :self._pos] = value.numpy()[:, :, :self._pos]
            grown.append(self._ort.OrtValue.ortvalue_from_numpy(new))
        self._past = grown

    def _step(self, token_ids: Sequence[int]) -> np.ndarray:
        n = len(token_ids)
        if n == 0:
            raise ValueError("prefill needs at least one token")
        if self.shared_buffer:
            self._reserve(self._pos + n)
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.asarray([token_ids], dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ones((1, self._pos + n), dtype=np.int64))
        binding.bind_cpu_input("position_ids",
                               np.arange(self._pos, self._pos + n, dtype=np.int64)[None])
        for name, value in zip(self._past_names, self._past, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name, value in zip(self._present_names, self._past, strict=True):
            if self.shared_buffer:
                binding.bind_ortvalue_output(name, value)
            else:
                binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()  # logits, then the present caches
        if not self.shared_buffer:
            self._past = list(outputs[1:])
        self._pos += n
        return outputs[0].numpy()[0]

    def close(self) -> None:
        self._past = []
        self.session = None


def _appends_in_place(path: Path) -> bool:
    """True when the graph's attention is GroupQueryAttention (past and present can share)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "GroupQueryAttention" for node in graph.node)

"""RecurrentGemma -> ONNX with its state as explicit graph inputs and outputs.

One graph serves prefill (S tokens) and decode (S = 1): the sequence axis is dynamic, the
state tensors have fixed shapes (see exporter.recurrent_decoder.state_layout), so the
graph's size does not depend on any prompt length. State names follow transformers.js'
hybrid models (`past_conv.{i}`, `past_recurrent.{i}`, `past_key_values.{i}.key` in,
`present_conv.{i}`, `present_recurrent.{i}`, `present.{i}.key` out); the manifest's
graph.state documents the layout (quantized artifacts copy it), and the runner reads it
from the graph's own inputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir, fp32_weight_bytes, write_manifest
from foundation.errors import GemmaEdgeError, require_extra
from foundation.formats import FORMATS
from foundation.sources import ReferenceModel

log = logging.getLogger("gemma_edge")

MODEL_FILE = FORMATS["onnx"].model_file
OPSET = 23


def export_recurrent_onnx(ref: ReferenceModel, out_dir: str | Path, *, overwrite: bool = False,
                          record: dict[str, Any] | None = None,
                          example_tokens: int = 3, rotate: bool | None = None) -> dict[str, Any]:
    """Write OUT_DIR/{model.onnx, model.onnx.data, tokenizer files, manifest.json}."""
    if rotate:
        raise GemmaEdgeError("--rotate does not apply to RecurrentGemma (no rotation path)",
                             "export without --rotate")
    require_extra("onnx", {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime"})
    import torch

    from exporter.onnx_export import _exporter_chatter_silenced
    from exporter.recurrent_decoder import RecurrentStateDecoder, state_layout

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GemmaEdgeError(f"{out_dir} already exists", "pass --overwrite or choose another --out")
    started = time.time()
    decoder = RecurrentStateDecoder(ref.model).eval()
    layout = state_layout(ref.model.config)
    seq = max(2, int(example_tokens))  # > 1 so torch.export does not specialise the axis
    example = (torch.ones(1, seq, dtype=torch.long), torch.arange(seq)[None],
               *(torch.randn(shape) for _i, _o, shape, _k in layout))
    s_dim = torch.export.Dim("sequence_length", min=1, max=1 << 16)
    dynamic = [{1: s_dim}, {1: s_dim}, tuple({} for _ in layout)]

    with atomic_output_dir(out_dir, overwrite=overwrite,
                           needs_bytes=fp32_weight_bytes(ref.model)) as tmp:
        log.info("exporting %s to ONNX with its state as graph I/O", ref.spec)
        with torch.inference_mode(False), torch.no_grad(), _exporter_chatter_silenced():
            torch.onnx.export(
                decoder, example, str(tmp / MODEL_FILE), dynamo=True, external_data=True,
                input_names=["input_ids", "position_ids", *(i for i, _o, _s, _k in layout)],
                output_names=["logits", *(o for _i, o, _s, _k in layout)],
                dynamic_shapes=dynamic, opset_version=OPSET, optimize=True, verbose=False,
            )
        graph = _check_graph(tmp / MODEL_FILE)
        ref.tokenizer.save_pretrained(tmp)
        cfg = ref.model.config
        state = {"tensors": [{"input": i, "output": o, "shape": s, "kind": k,
                              "dtype": "float32"} for i, o, s, k in layout],
                 "window": int(cfg.attention_window_size), "conv1d_width": int(cfg.conv1d_width),
                 "lru_width": int(cfg.lru_width),
                 # feed prefill in chunks of this many tokens: the graph's parallel scan holds
                 # S * S * lru_width floats (runtime_check.recurrent_runner does)
                 "prefill_chunk": 64,
                 "reset": "position 0 resets every state inside the graph",
                 # quantize replaces 2-D MatMul weights only; these stay float by design
                 # (docs/recurrent.md: measured per group)
                 "float_parameters": ["rg_lru.input_gate_weight", "rg_lru.recurrent_gate_weight",
                                      "rg_lru.recurrent_param", "conv_1d", "all norms",
                                      "the recurrence itself (fp32)"]}
        manifest = write_manifest(
            tmp, stage="export", started=started, packages=FORMATS["onnx"].export_tools,
            inputs={"source": ref.spec, "source_sha256": ref.sha256, "family": ref.family.name,
                    "variant": ref.variant},
            extra={"format": "onnx", "recipe": "fp32", "model_file": MODEL_FILE,
                   "graph": {**graph, "state": state}, "notes": ref.notes, **(record or {})},
        )
    log.info("wrote %s (%.1f s)", out_dir, manifest["wall_seconds"])
    return manifest


def _check_graph(path: Path) -> dict[str, Any]:
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)

    def describe(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in values}

    return {"opset": OPSET, "nodes": len(model.graph.node),
            "inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}

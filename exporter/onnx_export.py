"""torch → ONNX: the cache-explicit decoder traced with torch.export (dynamo) + onnxscript.

One graph serves prefill (S tokens) and decode (S = 1); sequence and past lengths are
dynamic, batch is 1. Names follow onnxruntime-genai's decoder conventions so the same
graph runs in onnxruntime and in onnxruntime-genai. Weights go to external data.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir, fp32_weight_bytes, write_manifest
from foundation.errors import GemmaEdgeError, require_extra
from foundation.formats import FORMATS
from foundation.sources import ReferenceModel

log = logging.getLogger("gemma_edge")

MODEL_FILE = FORMATS["onnx"].model_file
DATA_FILE = "model.onnx.data"
OPSET = 23  # RotaryEmbedding became a standard op in 23
# the default of export_onnx's rotate: on, as LiteRT's. The 270M, 512 held-out tokens
# (2026-12-02, docs/quantization.md): int8-dynamic KLD 0.0019 -> 0.0009, int4-calibrated
# 0.25 -> 0.11 (top-1 74 -> 82 %); the decode step 1.04-1.11x (225 more small nodes)
ROTATE = True


def export_onnx(ref: ReferenceModel, out_dir: str | Path, *, overwrite: bool = False,
                record: dict[str, Any] | None = None, rotate: bool | None = None) -> dict[str, Any]:
    """Write OUT_DIR/{model.onnx, model.onnx.data, tokenizer files, manifest.json};
    `record` goes into the manifest as it is (a build's stage key).
    rotate: rotate the weights' input spaces (foundation/rotation.py, as the LiteRT export
    does), so int4/int8 blocks lose less; the same function in float (None: ROTATE)."""
    require_extra("onnx", {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime"})
    import torch

    from exporter.cache_decoder import cache_names, decoder_facts
    from exporter.onnx_decoder import OnnxCacheDecoder

    if "onnx" not in ref.family.exports:
        raise GemmaEdgeError(f"the {ref.family.title} family has no ONNX export path yet")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GemmaEdgeError(f"{out_dir} already exists", "pass --overwrite or choose another --out")
    started = time.time()
    from foundation.rotation import apply_to_decoder, rotated_copy

    rotate = ROTATE if rotate is None else bool(rotate)
    model, rotation = rotated_copy(ref.model, in_place=ref.disposable) if rotate else (ref.model, None)
    decoder = OnnxCacheDecoder(model, ref.family).eval()
    apply_to_decoder(decoder)  # norms feeding Linears: SkipSimplifiedLayerNorm + 2 MatMuls
    num_layers = decoder.num_layers
    past_names, present_names = cache_names(num_layers)
    seq, past = 3, 4  # example sizes: > 1 so torch.export does not specialise them
    example = (
        torch.ones(1, seq, dtype=torch.long),
        torch.ones(1, past + seq, dtype=torch.long),
        torch.arange(past, past + seq)[None],
        *(t.normal_() for t in decoder.empty_cache(past)),
    )
    s_dim = torch.export.Dim("sequence_length", min=1, max=1 << 16)
    p_dim = torch.export.Dim("past_sequence_length", min=0, max=1 << 16)
    dynamic = [{1: s_dim}, {1: torch.export.Dim.AUTO}, {1: s_dim},
               tuple({2: p_dim} for _ in past_names)]

    with atomic_output_dir(out_dir, overwrite=overwrite,
                           needs_bytes=fp32_weight_bytes(ref.model)) as tmp:
        log.info("exporting %s to ONNX (torch.export + onnxscript)", ref.spec)
        with torch.inference_mode(False), torch.no_grad(), _exporter_chatter_silenced():
            torch.onnx.export(
                decoder, example, str(tmp / MODEL_FILE), dynamo=True, external_data=True,
                input_names=["input_ids", "attention_mask", "position_ids", *past_names],
                output_names=["logits", *present_names], dynamic_shapes=dynamic,
                opset_version=OPSET, optimize=True, verbose=False,
            )
        graph = _finish_graph(tmp / MODEL_FILE)
        ref.tokenizer.save_pretrained(tmp)
        manifest = write_manifest(
            tmp, stage="export", started=started, packages=FORMATS["onnx"].export_tools,
            inputs={"source": ref.spec, "source_sha256": ref.sha256, "family": ref.family.name,
                    "variant": ref.variant},
            extra={"format": "onnx", "recipe": "fp32", "model_file": MODEL_FILE,
                   "graph": {**graph, **decoder_facts(decoder),
                             "rotation": rotation.spec() if rotation else None},
                   "notes": ref.notes,
                   **(record or {})},
        )
    log.info("wrote %s (%.1f s)", out_dir, manifest["wall_seconds"])
    return manifest


@contextlib.contextmanager
def _exporter_chatter_silenced():
    """torch.onnx warns about torchvision ops and axis renames we do not use; keep logs readable."""
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        noisy.setLevel(level)


def _finish_graph(path: Path) -> dict[str, Any]:
    """Give every dynamic axis an onnxruntime-genai name, then check the whole model."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    _drop_unused_outputs(model.graph)
    names = {"attention_mask": "total_sequence_length"}
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if not dim.dim_param:
                continue
            if value.name in names and axis == 1:
                dim.dim_param = names[value.name]
            elif value.name.startswith("present.") and axis == 2:
                dim.dim_param = "total_sequence_length"
    onnx.save(model, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path), full_check=True)

    def describe(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in values}

    return {"opset": OPSET, "inputs": describe(model.graph.input),
            "outputs": describe(model.graph.output)}


def _drop_unused_outputs(graph) -> None:
    """Blank the optional outputs no node reads (SkipSimplifiedLayerNormalization's mean and
    inv_std_var), so onnxruntime does not compute and allocate them at every step."""
    read = {name for node in graph.node for name in node.input}
    read |= {value.name for value in graph.output}
    for node in graph.node:
        if node.domain == "com.microsoft":
            for i, name in enumerate(node.output):
                if i and name not in read:
                    node.output[i] = ""

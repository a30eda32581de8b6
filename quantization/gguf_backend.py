"""Write decided codes into an F32 GGUF export as llama.cpp's own block types.

llama.cpp's blocks (ggml-common.h), 32 weights along a row each:
- Q8_0: `{ float16 d; int8 qs[32]; }`, 34 bytes; weight = d * qs[i].
- Q4_0: `{ float16 d; uint8 qs[16]; }`, 18 bytes; qs[j] holds weight j in its low nibble
  and weight j + 16 in its high nibble, each a code q in [0, 15]; weight = d * (q - 8).

The codes and float16 scales are decided in quantization/weights.py on the grid
`grid_for("gguf", ...)` (symmetric codes in [-8, 7] / [-127, 127], scales rounded to
float16 first), so the bytes written here are exactly what was decided: tests compare
them against gguf-py's dequantize. Q4_K (256-weight super-blocks with 6-bit scales *and
mins*) is asymmetric, which our symmetric grid does not express; it is not offered.

Each weight is found in the export by the hash of its float bytes (as the ONNX backend
does), so the tied embedding `token_embd.weight` gets the LM head's codes. Every other
key and tensor is copied as it is; `general.file_type` says what the file now mostly is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS
from quantization.recipes import Recipe
from quantization.weights import QuantizedWeight, weight_hash

log = logging.getLogger("gemma_edge")

MODEL_FILE = FORMATS["gguf"].model_file
BLOCK = 32


def pack_q8_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Codes int8 [N, K], scales [N, K/32] -> Q8_0 bytes [N, K/32 * 34]."""
    n, k = codes.shape
    blocks = np.empty((n, k // BLOCK, 34), dtype=np.uint8)
    blocks[:, :, :2] = _fp16_bytes(scales)
    blocks[:, :, 2:] = codes.reshape(n, k // BLOCK, BLOCK).astype(np.int8).view(np.uint8)
    return blocks.reshape(n, -1)


def pack_q4_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Codes in [-8, 7] [N, K], scales [N, K/32] -> Q4_0 bytes [N, K/32 * 18]."""
    n, k = codes.shape
    if codes.min(initial=0) < -8 or codes.max(initial=0) > 7:
        raise ValueError("Q4_0 codes must lie in [-8, 7]")
    q = (codes.reshape(n, k // BLOCK, BLOCK).astype(np.int16) + 8).astype(np.uint8)
    blocks = np.empty((n, k // BLOCK, 18), dtype=np.uint8)
    blocks[:, :, :2] = _fp16_bytes(scales)
    blocks[:, :, 2:] = q[:, :, :16] | (q[:, :, 16:] << 4)
    return blocks.reshape(n, -1)


def _fp16_bytes(scales: np.ndarray) -> np.ndarray:
    n, nb = scales.shape
    return np.ascontiguousarray(scales.astype("<f2")).view(np.uint8).reshape(n, nb, 2)


def packed(qw: QuantizedWeight):
    """(GGML type, bytes) for one decided weight."""
    import gguf

    n, k = qw.codes.shape
    if qw.grid.block_size(k) != BLOCK or not qw.grid.fp16_scales:
        raise GemmaEdgeError(f"{qw.name}: grid {qw.grid.label} is not a GGUF block type",
                             "quantize a GGUF export with a q8_0 / q4_0 recipe")
    if qw.grid.bits == 8:
        return gguf.GGMLQuantizationType.Q8_0, pack_q8_0(qw.codes, qw.scales)
    if qw.grid.bits == 4:
        return gguf.GGMLQuantizationType.Q4_0, pack_q4_0(qw.codes, qw.scales)
    raise GemmaEdgeError(f"{qw.name}: no GGUF block type for {qw.grid.bits}-bit codes")


def quantize_gguf(src_dir: Path, dst_dir: Path, weights: dict[str, QuantizedWeight],
                  recipe: Recipe, *, keep_float: Sequence[np.ndarray] = (),
                  accuracy_level: int | None = None) -> dict:
    """Read src_dir/model.gguf (F32), write dst_dir/model.gguf with quantized blocks."""
    import gguf

    del keep_float, accuracy_level  # LiteRT's and onnxruntime's levers; llama.cpp has neither
    reader = gguf.GGUFReader(str(src_dir / MODEL_FILE))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst_dir / MODEL_FILE), arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture",
                                                            "general.file_type"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    body_bits = recipe.body.bits
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if body_bits == 8
                         else gguf.LlamaFileType.MOSTLY_Q4_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    by_hash = {qw.float_hash: qw for qw in weights.values()}
    used: set[str] = set()
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        data = np.asarray(tensor.data)
        qw = None
        if tensor.tensor_type == gguf.GGMLQuantizationType.F32 and data.ndim == 2:
            qw = by_hash.get(weight_hash(data))
        if qw is None:
            if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
                raise GemmaEdgeError(f"{src_dir} holds {tensor.name} as {tensor.tensor_type.name}",
                                     "quantize the F32 GGUF export (gemma-edge export --format gguf)")
            writer.add_tensor(tensor.name, np.array(data, dtype=np.float32))
            types["F32"] = types.get("F32", 0) + 1
            continue
        qtype, raw = packed(qw)
        writer.add_tensor(tensor.name, raw, raw_dtype=qtype)
        used.add(qw.name)
        types[qtype.name] = types.get(qtype.name, 0) + 1
    missing = sorted(set(weights) - used)
    if missing:
        raise GemmaEdgeError(f"{src_dir} does not hold the weights of {', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''} as the source model has them",
                             "re-export the GGUF from the same source, then quantize")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    log.info("GGUF %s: %s", recipe.name, ", ".join(f"{n} {t}" for t, n in sorted(types.items())))
    return {"tensor_types": types, "quantized_weights": len(used), "activations": "float"}

"""Quantize vision-language exports (docs/vision.md): the decoder by the recipe, the vision
tower int8, the projector float; the vision features' error measured and recorded.

The family names these as its `<format>.weights` and `<format>.quantizer`
(foundation/vision_families.py), so `quantization.quantize` never branches on families:

- weights: the recipe runs unchanged (quantization.weights.quantize_weights, GPTQ on
  calibration text included) over the text half of the model, seen as a causal LM
  (`model.layers...`, `lm_head`, as exporter.vision_graphs.TextView); the SigLIP tower's
  Linears get TOWER (int8, round to nearest: text calibration never reaches the tower).
  The projector is not quantized (PaliGemma's Linear, Gemma 3's projection matrix): it is
  one small matrix, and every image feature passes through it.
- ONNX: each of the three graphs goes through the text backend (quantization.onnx_backend):
  the decoder's MatMuls and the LM head, the embedding table in embed_tokens (tied to the
  head), the tower's MatMuls weight-only (float activations, TOWER_ACCURACY_LEVEL).
- LiteRT: one .tflite, so one ai-edge-quantizer pass (quantization.litert_backend): its
  recipe sets one FULLY_CONNECTED config for the whole graph, so the tower follows the
  decoder's body grid and activations (TOWER is ONNX's): int8 recipes give an int8 tower;
  under int4 recipes the tower is kept float (an int4 tower cost 100x the features error:
  docs/vision.md). The projector's ops (found in the vision_encoder signature's subgraph)
  stay float as on ONNX.

Both then run the quantized and the fp32 export's vision encoder on two fixed images and
record features max |delta| and cosine under `quantization.vision` in the manifest
(`check --image` measures the same against transformers on the user's images).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.artifacts import read_manifest
from quantization.recipes import HEAD, Recipe, TensorSpec
from quantization.weights import QuantizedWeight, quantize_weights

log = logging.getLogger("gemma_edge")

# The tower's Linears: int8, ONNX blocks of 16 (SigLIP so400m's K = 1152 and 4304 = 16 x 269).
TOWER = TensorSpec(8, {"tflite": 0, "onnx": 16})
# ONNX tower activations: 0 = float (weight-only int8), 4 = int8 in the kernel (dynamic),
# None = as the recipe's decoder. 0 for every recipe: on the tiny towers weight-only is as
# close or closer (features cosine), and at SigLIP so400m's shape over Gemma 3's 4096
# patches (one MLP, onnxruntime 1.32, 2 threads) level 0 ran at 1.07-1.14x fp32's time,
# level 4 at 1.6-1.8x: the tower is a prefill, not a decode step (docs/vision.md).
TOWER_ACCURACY_LEVEL: int | None = 0
VISION_PREFIX = "vision."  # names of the tower's weights in the weights dict


def _views(ref):
    """(text ref, vision ref): ReferenceModels over the text half (a causal LM's names) and
    over the tower; memoized on `ref`, so a build's recipes share calibration."""
    from torch import nn

    from foundation.vision_prompt import generator

    def make():
        gen = generator(ref.model, ref.family)
        text = nn.Module()  # as a causal LM: .model (the language model) and .lm_head
        text.model, text.lm_head = gen.model.language_model, gen.lm_head
        tower = nn.Module()
        tower.vision = gen.model.vision_tower  # the projector is left out: it stays float
        return (dataclasses.replace(ref, model=text, memo={}),
                dataclasses.replace(ref, model=tower, memo={}))

    return ref.memoized("vision_views", (), make)


def quantize_vision_weights(ref, recipe: Recipe, fmt: str, *, calibration: str | None = None,
                            calibration_tokens: int = 4096, progress: bool = True,
                            head_parts: int = 0) -> dict[str, QuantizedWeight]:
    """The decoder's weights by `recipe` (calibrated on text as for text models), then the
    tower's by TOWER (ONNX) or the recipe's body grid rounded to nearest (LiteRT)."""
    text, tower = _views(ref)
    weights = quantize_weights(text, recipe, fmt, calibration=calibration,
                               calibration_tokens=calibration_tokens, progress=progress,
                               head_parts=head_parts)
    spec = TOWER if fmt == "onnx" else dataclasses.replace(recipe.body, method="rtn")
    tower_recipe = Recipe(f"{recipe.name}/vision-tower", "the vision tower", spec, spec,
                          activations=recipe.activations)
    vision = quantize_weights(tower, tower_recipe, fmt, progress=progress)
    return {**weights, **vision}


def _split(weights: dict[str, QuantizedWeight]):
    tower = {n: qw for n, qw in weights.items() if n.startswith(VISION_PREFIX)}
    text = {n: qw for n, qw in weights.items() if n not in tower}
    return text, tower


def sample_pixels(settings: dict) -> np.ndarray:
    """Two fixed images in the tower's input range: seeded noise and a smooth colour ramp."""
    h, w = int(settings["size"]["height"]), int(settings["size"]["width"])
    noise = np.random.default_rng(0).uniform(-1, 1, (3, h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    y, x = yy / max(h - 1, 1), xx / max(w - 1, 1)
    ramp = np.stack([2 * y - 1, 2 * x - 1, np.sin(6 * x + 3 * y)])
    return np.stack([noise, ramp]).astype(np.float32)


def features_error(want: np.ndarray, got: np.ndarray) -> dict[str, float]:
    want, got = want.reshape(len(want), -1).astype(np.float64), got.reshape(len(got), -1)
    cos = (want * got).sum(1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    return {"features_max_abs_delta": float(np.abs(want - got).max()),
            "features_cosine_min": float(cos.min()),
            "features_scale": float(np.abs(want).max())}


def _onnx_graph(src_dir: Path, dst_dir: Path, file: str, weights, recipe, level) -> dict:
    """One graph through the text backend, under its own name (`file` and `file`.data)."""
    from quantization.onnx_backend import quantize_onnx

    return quantize_onnx(src_dir, dst_dir, weights, recipe, accuracy_level=level, model_file=file)


def quantize_vision_onnx(src_dir: Path, dst_dir: Path, weights: dict[str, QuantizedWeight],
                         recipe: Recipe, *, keep_float: Sequence[np.ndarray] = (),
                         accuracy_level: int | None = None) -> dict:
    """The three graphs of src_dir's vision export, quantized into dst_dir. Returns stats."""
    import onnxruntime as ort

    manifest = read_manifest(src_dir)
    graphs = {name: g["file"] for name, g in manifest["graphs"].items()}
    text, tower = _split(weights)
    dst_dir.mkdir(parents=True, exist_ok=True)
    stats = {"decoder": _onnx_graph(src_dir, dst_dir, graphs["decoder"], text, recipe, accuracy_level)}
    head = {HEAD: text[HEAD]} if HEAD in text else {}
    try:  # the table is the head's (tied) bytes: quantized as the head, else left float
        stats["embed_tokens"] = _onnx_graph(src_dir, dst_dir, graphs["embed_tokens"], head, recipe,
                                            accuracy_level)
    except Exception as error:  # noqa: BLE001 - an untied table: keep it float
        log.info("embed_tokens stays float (%s)", error)
        for suffix in ("", ".data"):
            if (src_dir / f"{graphs['embed_tokens']}{suffix}").is_file():
                shutil.copy2(src_dir / f"{graphs['embed_tokens']}{suffix}",
                             dst_dir / f"{graphs['embed_tokens']}{suffix}")
        stats["embed_tokens"] = {"quantized_weights": 0}
    level = TOWER_ACCURACY_LEVEL
    if level is None:
        level = accuracy_level if accuracy_level is not None else \
            0 if recipe.activations["onnx"] == "float" else 4
    stats["vision_encoder"] = _onnx_graph(src_dir, dst_dir, graphs["vision_encoder"], tower, recipe,
                                          level)
    px = sample_pixels(manifest["vision"]["preprocessing"])

    def features(directory):
        session = ort.InferenceSession(str(directory / graphs["vision_encoder"]),
                                       providers=["CPUExecutionProvider"])
        return session.run(["image_features"], {"pixel_values": px})[0]

    stats["vision"] = _vision_record(tower, level,
                                     features_error(features(src_dir), features(dst_dir)))
    return stats


def _vision_record(tower, level, error, projector: str = "float") -> dict:
    grids = sorted({qw.grid.label for qw in tower.values()})
    return {"tower": {"weights": len(tower), "grid": ", ".join(grids) or "float",
                      "activations": {0: "float (weight-only)", 4: "int8 (dynamic)"}.get(level, level)},
            "projector": projector,
            "against": "the fp32 export's vision encoder, two fixed images (seeded noise, a ramp)",
            **error}


def quantize_vision_tflite(src_dir: Path, dst_dir: Path, weights: dict[str, QuantizedWeight],
                           recipe: Recipe, *, keep_float: Sequence[np.ndarray] = (),
                           accuracy_level: int | None = None) -> dict:
    """The one .tflite (every signature) through the text backend, then the features' error."""
    from ai_edge_litert.interpreter import Interpreter

    from quantization.litert_backend import MODEL_FILE, quantize_tflite

    text, tower = _split(weights)
    hashes = {qw.float_hash for qw in tower.values()}
    vision = _vision_weights(src_dir / MODEL_FILE)  # the tower's and the projector's
    projector = [a for h, a in vision if h not in hashes]
    if recipe.body.bits == 8:
        stats = quantize_tflite(src_dir, dst_dir, weights, recipe,
                                keep_float=[*keep_float, *projector])
        level = 4 if recipe.activations["tflite"] == "dynamic-int8" else 0
    else:  # the graph's one FULLY_CONNECTED config would make the tower int4: keep it float
        stats = quantize_tflite(src_dir, dst_dir, text, recipe,
                                keep_float=[*keep_float, *(a for _h, a in vision)])
        tower, level = {}, "float (int4 recipes: LiteRT gives the graph one int4 config)"
    px = sample_pixels(read_manifest(src_dir)["vision"]["preprocessing"])

    def features(directory):
        encode = Interpreter(model_path=str(directory / MODEL_FILE)).get_signature_runner("vision_encoder")
        return np.concatenate([encode(pixel_values=p[None])["image_features"] for p in px])

    stats["vision"] = _vision_record(tower, level, features_error(features(src_dir), features(dst_dir)))
    return stats


def _vision_weights(model: Path) -> list[tuple[str, np.ndarray]]:
    """(hash, array) of every 2-D float FULLY_CONNECTED weight the vision_encoder signature's
    subgraph reads: the tower's and the projector's (buffers are shared across signatures,
    and the text signatures read none of these)."""
    import mmap

    from ai_edge_litert import schema_py_generated as schema

    from quantization.litert_backend import builtin_code, weight_tensors
    from quantization.weights import weight_hash

    found = {}
    with open(model, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        spans = weight_tensors(data)
        flat = schema.Model.GetRootAs(data, 0)
        index = next(flat.SignatureDefs(i).SubgraphIndex() for i in range(flat.SignatureDefsLength())
                     if flat.SignatureDefs(i).SignatureKey() == b"vision_encoder")
        graph = flat.Subgraphs(index)
        fc = {i for i in range(flat.OperatorCodesLength()) if builtin_code(flat.OperatorCodes(i))
              == schema.BuiltinOperator.FULLY_CONNECTED}
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if op.OpcodeIndex() not in fc or op.InputsLength() < 2 or op.Inputs(1) < 0:
                continue
            buffer = graph.Tensors(op.Inputs(1)).Buffer()
            if buffer in spans and buffer not in found:
                offset, length, shape = spans[buffer]
                array = np.frombuffer(data[offset:offset + length], np.float32).reshape(shape).copy()
                found[buffer] = (weight_hash(array), array)
    return list(found.values())

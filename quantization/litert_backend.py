"""Write decided codes into an fp32 TFLite export through ai-edge-quantizer.

ai-edge-quantizer rounds to nearest itself. To make it write *our* codes (calibrated
rounding), the float weights in a copy of the model are first replaced by their
dequantized values on the exact grid (grid.py): their block maxima sit at ±qmax·scale,
so the quantizer recomputes the same scales and rounds back to the same codes. Weights
are found by the hash of their float bytes (FULLY_CONNECTED weights are [N, K] like
torch's), so no tensor names are needed. Then:

- `float` activations: weight-only (dequantized in the graph, float compute);
- `dynamic-int8`: blockwise weights, activations quantized to int8 at run time (the only
  way LiteRT runs blockwise int4);
- the LM head / tied embedding (the FULLY_CONNECTED ops multiplying by it, and the
  EMBEDDING_LOOKUP) gets the head's spec. An export stores it as column parts
  (litert_decoder.HeadParts); each part is its own tensor, quantized per output channel.

Afterwards the result is checked: every weight we decided must now be an integer tensor
(ai-edge-quantizer 0.10 silently leaves some configurations unquantized).
"""

from __future__ import annotations

import contextlib
import io
import logging
import mmap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS
from quantization.recipes import HEAD, Recipe
from quantization.weights import QuantizedWeight, weight_hash

log = logging.getLogger("gemma_edge")

MODEL_FILE = FORMATS["tflite"].model_file
_FLOAT32, _INT8, _INT4 = 0, 9, 17


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def buffer_span(model, index: int) -> tuple[int, int]:
    """(file offset, length) of a buffer's bytes, inline or appended after the flatbuffer."""
    buf = model.Buffers(index)
    if buf.Offset() > 1:
        return buf.Offset(), buf.Size()
    tab = buf._tab
    field = tab.Offset(4)
    if not field:
        return 0, 0
    return tab.Vector(field), tab.VectorLen(field)


def weight_tensors(data, *, types=(_FLOAT32,)) -> dict[int, tuple[int, int, tuple]]:
    """buffer index -> (offset, length, shape) of every 2-D constant tensor of these types."""
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    found = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            if tensor.Type() not in types or tensor.ShapeLength() != 2 or tensor.Buffer() in found:
                continue
            offset, length = buffer_span(model, tensor.Buffer())
            if length:
                found[tensor.Buffer()] = (offset, length, tuple(tensor.ShapeAsNumpy().tolist()))
    return found


def match_weights(data, weights: dict[str, QuantizedWeight]) -> dict[int, tuple[QuantizedWeight, float]]:
    """buffer index -> (decided weight, factor) for every float weight tensor of the model:
    exact bytes first, else a scaled copy (converters fold constants into weights)."""
    by_hash = {qw.float_hash: qw for qw in weights.values()}
    found = {}
    for index, (offset, length, shape) in weight_tensors(data).items():
        array = np.frombuffer(data[offset:offset + length], dtype=np.float32).reshape(shape)
        qw = by_hash.get(weight_hash(array))
        if qw is not None and qw.codes.shape == shape:
            found[index] = (qw, 1.0)
            continue
        for candidate in weights.values():
            factor = candidate.scale_of(array)
            if factor is not None:
                found[index] = (candidate, factor)
                break
    return found


def snap_weights(path: Path, matched: dict[int, tuple[QuantizedWeight, float]]) -> int:
    """Overwrite, in place, each matched float weight of `path` (match_weights of this
    file) by its dequantized grid values."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as data:
        spans = weight_tensors(data)
        for index, (qw, factor) in matched.items():
            offset, length, _shape = spans[index]
            data[offset:offset + length] = (qw.dequantized() * np.float32(factor)).astype(
                np.float32).tobytes()
    return len(matched)


def as_stored(weights: dict[str, QuantizedWeight]) -> dict[str, QuantizedWeight]:
    """The weights as the TFLite graph holds them: the head as its column parts."""
    out = {}
    for name, qw in weights.items():
        out.update({part.name: part for part in qw.parts} if qw.parts else {name: qw})
    return out


def _is_head(qw: QuantizedWeight) -> bool:
    return qw.name.split("#")[0] == HEAD


def head_outputs(data, matched: dict) -> list[str]:
    """Names of the outputs of every FULLY_CONNECTED that multiplies by an LM head part
    (or a scaled copy of one: Gemma 2's final soft-cap folds 1/30 into it)."""
    return fc_outputs(data, {b for b, (qw, _f) in matched.items() if _is_head(qw)})


def float_buffers(data, arrays: Sequence[np.ndarray]) -> set[int]:
    """Buffer indices of the 2-D float constants equal to one of `arrays` (none: empty)."""
    hashes = {weight_hash(a) for a in arrays}
    shapes = {a.shape for a in arrays}
    return {index for index, (offset, length, shape) in weight_tensors(data).items()
            if shape in shapes and weight_hash(np.frombuffer(data[offset:offset + length], np.float32).reshape(shape))
            in hashes}


def builtin_code(operator_code) -> int:
    """The builtin op of a flatbuffer OperatorCode: codes above 127 are only in BuiltinCode,
    older files only fill DeprecatedBuiltinCode, so the larger of the two."""
    return max(operator_code.BuiltinCode(), operator_code.DeprecatedBuiltinCode())


def fc_outputs(data, buffers: set[int]) -> list[str]:
    """Names of the outputs of every FULLY_CONNECTED whose weight is one of these buffers."""
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    fc = {i for i in range(model.OperatorCodesLength())
          if builtin_code(model.OperatorCodes(i)) == schema.BuiltinOperator.FULLY_CONNECTED}
    names = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if op.OpcodeIndex() in fc and op.InputsLength() > 1 and op.Inputs(1) >= 0 \
                    and graph.Tensors(op.Inputs(1)).Buffer() in buffers:
                names.append(graph.Tensors(op.Outputs(0)).Name().decode())
    return names


def _any_of(names: list[str]) -> str:
    """ai-edge-quantizer's scope regex for ops with any of these output names (it matches
    an op's output names joined by ';')."""
    import re

    return "(?:^|;)(?:" + "|".join(re.escape(n) for n in names) + ")(?:;|$)"


def _aeq_recipe(recipe: Recipe, weights: dict[str, QuantizedWeight], head_names: list[str],
                float_names: list[str]):
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager

    op = qtyping.TFLOperationName
    gran = qtyping.QuantGranularity

    def granularity(qw: QuantizedWeight):
        return gran.CHANNELWISE if qw.grid.block == 0 else getattr(gran, f"BLOCKWISE_{qw.grid.block}")

    body = next(qw for qw in weights.values() if not _is_head(qw))
    head = next(qw for qw in weights.values() if _is_head(qw))
    manager = recipe_manager.RecipeManager()
    activations = recipe.activations["tflite"]

    def add(regex, operation, qw, dynamic):
        if dynamic:
            manager.add_dynamic_config(regex, operation, qw.grid.bits, granularity(qw))
        else:
            manager.add_weight_only_config(regex, operation, qw.grid.bits, granularity(qw))

    # A dynamic-int8 recipe computes its head in dynamic int8 too. Weight-only there (float
    # activations) makes the runtime hold the [vocab, hidden] table in float32 and read 4x
    # the head's bytes per token: the 270M's int4-calibrated .litertlm with a weight-only int8
    # head decoded at 0.30x export_hf's int4 in LiteRT-LM, with +1.2 GB RSS (docs/results.md).
    dynamic = activations == "dynamic-int8"
    add(".*", op.FULLY_CONNECTED, body, dynamic)
    if head_names:  # later, narrower configs win
        add(_any_of(head_names), op.FULLY_CONNECTED, head, dynamic)
    if float_names:  # the rotations (foundation/rotation.py) stay float
        manager.add_quantization_config(_any_of(float_names), op.FULLY_CONNECTED,
                                        algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    # A lookup quantizes no activations, so the "dynamic" config loses nothing: it keeps the
    # int8 table in the EMBEDDING_LOOKUP (as export_hf does). The weight-only config puts a
    # DEQUANTIZE of the whole 262k x 640 table in front of it, run at every step: 3x slower
    # decode and +1.4 GB in LiteRT-LM.
    add(".*", op.EMBEDDING_LOOKUP, head, True)
    return manager.get_quantization_recipe()


def quantize_tflite(src_dir: Path, dst_dir: Path, weights: dict[str, QuantizedWeight],
                    recipe: Recipe, *, keep_float: Sequence[np.ndarray] = (),
                    accuracy_level: int | None = None) -> dict:
    """keep_float: constants whose FULLY_CONNECTED ops stay float (an export's rotations).
    accuracy_level is ONNX's; LiteRT's activations follow the recipe."""
    from ai_edge_quantizer import quantizer

    if recipe.activations["tflite"] not in ("float", "dynamic-int8"):
        raise GemmaEdgeError(f"recipe '{recipe.name}' ({recipe.activations['tflite']} activations) "
                             "is not implemented for TFLite yet", "use int8 or an int4 recipe")
    weights = as_stored(weights)
    dst_dir.mkdir(parents=True, exist_ok=True)
    staging = dst_dir / ".snapped.tflite"
    snapped = 0
    try:
        import shutil

        shutil.copyfile(src_dir / MODEL_FILE, staging)
        with open(staging, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            matched = match_weights(data, weights)  # hashes every weight of the model: once
            names = head_outputs(data, matched)
            float_names = fc_outputs(data, float_buffers(data, keep_float))
        if any(qw.method != "rtn" for qw in weights.values()):
            snapped = snap_weights(staging, matched)
            log.info("snapped %d float weights onto the calibrated grid", snapped)
        qt = quantizer.Quantizer(str(staging), _aeq_recipe(recipe, weights, names, float_names))
        chatter = io.StringIO()  # it prints sizes to stdout, which `--json` keeps for JSON
        with contextlib.redirect_stdout(chatter):
            result = qt.quantize()
            result.export_model(str(dst_dir / MODEL_FILE), overwrite=True)
        log.debug("ai-edge-quantizer: %s", chatter.getvalue().strip())
    finally:
        staging.unlink(missing_ok=True)
    with open(dst_dir / MODEL_FILE, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        kept = float_buffers(data, keep_float)
        left_float = [shape for index, (_o, _n, shape) in weight_tensors(data).items()
                      if index not in kept and any(qw.codes.shape == shape for qw in weights.values())]
        integer = weight_tensors(data, types=(_INT8, _INT4))
    if left_float:
        raise GemmaEdgeError(f"ai-edge-quantizer left {len(left_float)} weight tensors in float "
                             f"(first shape {left_float[0]}) for recipe '{recipe.name}'",
                             "this grid is not supported by the installed ai-edge-quantizer; "
                             "choose another recipe")
    return {"integer_weight_tensors": len(integer), "snapped_weights": snapped,
            "activations": recipe.activations["tflite"]}

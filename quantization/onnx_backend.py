"""Write decided codes into an fp32 ONNX export: MatMulNBits and a quantized embedding.

- Every MatMul whose weight matches a quantized Linear (by the hash of its float bytes)
  becomes com.microsoft MatMulNBits: B uint8 [N, K/block, block*bits/8] (4-bit codes
  packed two per byte, low nibble first), scales float32 [N, K/block], implicit zero
  point 2**(bits-1), accuracy_level per recipe (4 = int8 activations in the kernel).
- MatMulNBits that read one activation (q/k/v, gate/up) are stacked into one, then split.
- The tied embedding shares the LM head's packed bytes: 4-bit through GatherBlockQuantized,
  8-bit through Gather -> Cast -> Sub(128) -> Mul(scale), so the table is stored once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS
from quantization.recipes import Recipe
from quantization.weights import QuantizedWeight, weight_hash

log = logging.getLogger("gemma_edge")

MODEL_FILE = FORMATS["onnx"].model_file
DATA_FILE = "model.onnx.data"


def pack_codes(qw: QuantizedWeight) -> np.ndarray:
    """Codes [N, K] -> MatMulNBits B [N, K/block, block*bits/8] uint8."""
    n, k = qw.codes.shape
    block = qw.grid.block_size(k)
    unsigned = (qw.codes.astype(np.int16) + 2 ** (qw.grid.bits - 1)).astype(np.uint8)
    if qw.grid.bits == 8:
        return unsigned.reshape(n, k // block, block)
    if qw.grid.bits != 4:
        raise ValueError(f"no ONNX packing for {qw.grid.bits}-bit codes")
    packed = unsigned[:, 0::2] | (unsigned[:, 1::2] << 4)
    return packed.reshape(n, k // block, block // 2)


def quantize_onnx(src_dir: Path, dst_dir: Path, weights: dict[str, QuantizedWeight],
                  recipe: Recipe, *, keep_float: Sequence[np.ndarray] = (),
                  accuracy_level: int | None = None, model_file: str = MODEL_FILE) -> dict:
    """Read src_dir/model.onnx (+data), write the quantized graph to dst_dir. Returns stats.

    accuracy_level overrides the recipe's (4 = int8 activations in the kernel, 0 = float
    activations: slow for 8 bits, but exact, which is how tests prove the runtime executes
    our grid). keep_float is LiteRT's (its rotations); ONNX exports hold none."""
    import onnx
    from onnx import helper, numpy_helper

    if accuracy_level is None:
        accuracy_level = 0 if recipe.activations["onnx"] == "float" else 4

    # the graph alone: float weights are read one at a time from the data file when hashed,
    # and copied through when saved (the 1B's 4 GB of float weights never sit in memory)
    model = onnx.load(str(src_dir / model_file), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    by_hash = {qw.float_hash: qw for qw in weights.values()}
    producers = {o: n for n in graph.node for o in n.output}
    new_inits: list = []
    added: set[str] = set()
    replaced: dict[str, QuantizedWeight] = {}
    nodes = []
    head_name = None

    def packed_inputs(qw: QuantizedWeight, base: str) -> tuple[str, str]:
        if base not in added:
            new_inits.append(numpy_helper.from_array(pack_codes(qw), f"{base}.q{qw.grid.bits}"))
            new_inits.append(numpy_helper.from_array(qw.scales.astype(np.float32), f"{base}.scales"))
            added.add(base)
        return f"{base}.q{qw.grid.bits}", f"{base}.scales"

    def weight_of(name: str, transposed: bool) -> QuantizedWeight | None:
        if name not in inits or len(inits[name].dims) != 2:
            return None
        array = numpy_helper.to_array(inits[name], base_dir=str(src_dir))
        return by_hash.get(weight_hash(array.T if transposed else array))

    for node in graph.node:
        if node.op_type == "MatMul":
            b = node.input[1]
            qw, source = weight_of(b, transposed=True), b
            if qw is None and b in producers and producers[b].op_type == "Transpose":
                source = producers[b].input[0]
                qw = weight_of(source, transposed=False)
            if qw is not None:
                n, k = qw.codes.shape
                q_name, s_name = packed_inputs(qw, source)
                nodes.append(helper.make_node(
                    "MatMulNBits", [node.input[0], q_name, s_name], list(node.output),
                    name=f"{node.name}.nbits", domain="com.microsoft", K=k, N=n,
                    bits=qw.grid.bits, block_size=qw.grid.block_size(k),
                    accuracy_level=accuracy_level))
                replaced[source] = qw
                continue
        if node.op_type == "Gather" and node.input[0] in inits:
            qw = weight_of(node.input[0], transposed=False)
            if qw is not None:
                head_name = node.input[0]
                nodes.extend(_quantized_gather(node, qw, packed_inputs(qw, node.input[0]), new_inits))
                replaced[node.input[0]] = qw
                continue
        nodes.append(node)

    missing = sorted(set(weights) - {qw.name for qw in replaced.values()})
    if missing:
        raise GemmaEdgeError(f"{len(missing)} weights of the source were not found in the ONNX "
                             f"export (first: {missing[0]})",
                             "re-export the model from the same source, then quantize")
    nodes, packed = _pack_shared_inputs(nodes, new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    _prune_dead_nodes(graph)  # the Transpose that fed the float LM head
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + [t for t in new_inits if t.name in used])  # not the stacked parts
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    dst_dir.mkdir(parents=True, exist_ok=True)
    new_inits.clear()  # their bytes are in the graph now
    save_streamed(model, src_dir, dst_dir, model_file=model_file)
    return {"matmulnbits": sum(n.op_type == "MatMulNBits" for n in graph.node),
            "quantized_weights": len(replaced), "packed_groups": packed,
            "embedding": head_name is not None, "accuracy_level": accuracy_level,
            "activations": "float" if accuracy_level == 0 else recipe.activations["onnx"]}


def save_streamed(model, src_dir: Path, dst_dir: Path, *, model_file: str = MODEL_FILE,
                  threshold: int = 1024) -> None:
    """dst_dir/<model_file> + <model_file>.data: every initializer of `threshold` bytes or more
    goes to the data file, one at a time: in-memory ones (the new packed codes) from their
    bytes, external ones (the float weights kept) copied from the source's data file. What
    onnx.save(save_as_external_data=True) writes, without loading the source's weights."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph = model.graph
    attribute_tensors = [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
    if any(uses_external_data(t) for t in attribute_tensors):
        raise ValueError("external data in a node attribute: not written by save_streamed")
    sources: dict[str, Any] = {}
    try:
        data_file = f"{model_file}.data"  # model.onnx.data for the decoder's model.onnx
        with open(dst_dir / data_file, "wb") as out:
            for tensor in graph.initializer:
                if uses_external_data(tensor):
                    info = ExternalDataInfo(tensor)
                    if info.location not in sources:
                        sources[info.location] = open(_inside(src_dir, info.location), "rb")
                    src = sources[info.location]
                    src.seek(info.offset or 0)
                    data = src.read(info.length) if info.length else src.read()
                elif tensor.HasField("raw_data") and len(tensor.raw_data) >= threshold:
                    data = tensor.raw_data
                else:
                    continue
                out.write(b"\0" * (-out.tell() % 4096))  # page-aligned, as onnx aligns large tensors
                offset = out.tell()
                out.write(data)
                tensor.ClearField("raw_data")
                del tensor.external_data[:]
                tensor.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (("location", data_file), ("offset", offset), ("length", len(data))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, str(value)
    finally:
        for fh in sources.values():
            fh.close()
    onnx.save(model, str(dst_dir / model_file))


def _inside(directory: Path, location: str) -> Path:
    """An external data file named by a graph: inside its directory (the artifact was
    verified, but the graph names the file)."""
    path = (directory / location).resolve()
    if directory.resolve() not in path.parents:
        raise GemmaEdgeError(f"the ONNX graph in {directory} names external data outside it "
                             f"({location})", "re-export the model")
    return path


def _pack_shared_inputs(nodes: list, new_inits: list) -> tuple[list, int]:
    """MatMulNBits reading the same activation with the same grid (q/k/v, gate/up) become one
    MatMulNBits over the rows stacked, then a Split: the same codes, scales and arithmetic
    (rows are independent; level 4 quantizes the shared input once either way), with one
    kernel launch and one activation quantization instead of three (or two) per decode step.
    """
    from onnx import helper, numpy_helper

    def attrs(node):
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    groups: dict[tuple, list] = {}
    for node in nodes:
        if node.op_type == "MatMulNBits":
            a = attrs(node)
            key = (node.input[0], a["K"], a["bits"], a["block_size"], a.get("accuracy_level", 0))
            groups.setdefault(key, []).append(node)
    arrays = {t.name: t for t in new_inits}
    replace: dict[int, list] = {}
    drop: set[int] = set()
    for (source, k, bits, block, level), members in groups.items():
        if len(members) < 2:
            continue
        base = f"{members[0].name}.packed"
        sizes = [attrs(m)["N"] for m in members]
        for i, suffix in ((1, "q"), (2, "scales")):
            stacked = np.concatenate([numpy_helper.to_array(arrays[m.input[i]]) for m in members])
            new_inits.append(numpy_helper.from_array(stacked, f"{base}.{suffix}"))
        new_inits.append(numpy_helper.from_array(np.array(sizes, np.int64), f"{base}.sizes"))
        replace[id(members[0])] = [
            helper.make_node("MatMulNBits", [source, f"{base}.q", f"{base}.scales"], [f"{base}.out"],
                             name=base, domain="com.microsoft", K=k, N=int(sum(sizes)), bits=bits,
                             block_size=block, accuracy_level=level),
            helper.make_node("Split", [f"{base}.out", f"{base}.sizes"],
                             [o for m in members for o in m.output], name=f"{base}.split", axis=-1)]
        drop.update(id(m) for m in members[1:])
    out = []
    for node in nodes:
        if id(node) in drop:
            continue
        out.extend(replace.get(id(node), [node]))
    return out, len(replace)


def _quantized_gather(node, qw: QuantizedWeight, names: tuple[str, str], new_inits: list) -> list:
    from onnx import helper, numpy_helper

    q_name, s_name = names
    n, k = qw.codes.shape
    block = qw.grid.block_size(k)
    out = node.output[0]
    base = f"{node.name}.dq"
    if qw.grid.bits == 4:
        shape = numpy_helper.from_array(np.array([n, k // 2], np.int64), f"{base}.shape")
        new_inits.append(shape)
        return [
            helper.make_node("Reshape", [q_name, shape.name], [f"{base}.flat"], name=f"{base}.reshape"),
            helper.make_node("GatherBlockQuantized", [f"{base}.flat", node.input[1], s_name], [out],
                             name=f"{base}.gbq", domain="com.microsoft", bits=4, block_size=block,
                             gather_axis=0, quantize_axis=1),
        ]
    consts = {"zp": np.array(128, np.float32), "axis": np.array([-1], np.int64),
              "hidden": np.array([0, 0, k], np.int64)}
    for key, value in consts.items():
        new_inits.append(numpy_helper.from_array(value, f"{base}.{key}"))
    steps = [  # codes [1,S,K/b,b] -> float -> minus zero point -> times scale [1,S,K/b,1]
        ("Gather", [q_name, node.input[1]], "codes", {}),
        ("Cast", ["codes"], "f", {"to": 1}),
        ("Sub", ["f", "zp"], "c", {}),
        ("Gather", [s_name, node.input[1]], "s", {}),
        ("Unsqueeze", ["s", "axis"], "s1", {}),
        ("Mul", ["c", "s1"], "w", {}),
        ("Reshape", ["w", "hidden"], out, {}),
    ]
    local = {"codes", "f", "zp", "c", "s", "axis", "s1", "w", "hidden"}
    made = []
    for i, (op, inputs, output, attrs) in enumerate(steps):
        ins = [f"{base}.{x}" if x in local else x for x in inputs]
        made.append(helper.make_node(op, ins, [output if output == out else f"{base}.{output}"],
                                     name=f"{base}.{i}", **attrs))
    return made


def _prune_dead_nodes(graph) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)

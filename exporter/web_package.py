"""The web package: an ONNX artifact in the layout transformers.js loads, plus a page.

    index.html, app.js, worker.js          the page (exporter/web/), no build step
    runtime/transformers.min.js            @huggingface/transformers (ORT-web bundled in)
    runtime/ort-wasm-simd-threaded.*       onnxruntime-web's WASM runtime, the version the
                                           bundle was built against (no CDN at run time)
    config.json, generation_config.json    the model directory transformers.js loads is the
    tokenizer.json, tokenizer_config.json  package itself (chat_template.jinja beside them,
    onnx/model[_quantized|_q4].onnx(_data) which the page hands to apply_chat_template)
    web.json                               what the page needs: dtype, stop ids, chat or not

transformers.js names a dtype's file with a suffix (`_quantized` for q8, `_q4` for q4,
none for fp32) and reads external data as `<file>_data` when config.json's
`transformers.js_config.use_external_data_format` says so. It feeds `position_ids` from 1
for gemma3_text (transformers.js 4.3.1, `decoder_forward`: start_index 1 for paligemma,
gemma3_text, gemma3) where our graph counts from 0: the package's graph subtracts the
offset first (one Sub node), the shared exporter is untouched. Activations stay fp32
(onnxruntime issue 26732: fp16 activations overflow on Gemma 3). A model over the
browser's 2 GB ArrayBuffer limit is refused here, not at page load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from foundation.errors import GemmaEdgeError
from foundation.families import get_family

ASSETS = Path(__file__).parent / "web"
PAGE_FILES = ("index.html", "app.js", "worker.js")
TRANSFORMERS = ASSETS / "node_modules" / "@huggingface" / "transformers" / "dist"
ORT = ASSETS / "node_modules" / "onnxruntime-web" / "dist"
# what transformers.min.js loads at run time: the bundle, and ORT's asyncify WASM build
RUNTIME_FILES = ((TRANSFORMERS, "transformers.min.js"),
                 (ORT, "ort-wasm-simd-threaded.asyncify.mjs"),
                 (ORT, "ort-wasm-simd-threaded.asyncify.wasm"))
MAX_MODEL_BYTES = 2**31 - 1  # one ArrayBuffer per file in the browser (and protobuf's limit)
# transformers.js's first position per model type (default 0); see the module doc
POSITION_START = {"gemma3_text": 1, "gemma3": 1, "paligemma": 1}
DTYPE_SUFFIX = {"fp32": "", "q8": "_quantized", "q4": "_q4"}


def web_dtype(recipe: str | None) -> str:
    """The transformers.js dtype a recipe's graph is loaded as."""
    recipe = recipe or "fp32"
    if recipe == "fp32":
        return "fp32"
    if recipe.startswith("int8"):
        return "q8"
    if recipe.startswith("int4"):
        return "q4"
    raise GemmaEdgeError(f"recipe '{recipe}' has no transformers.js dtype",
                         "package an fp32, int8 or int4 ONNX artifact --as web")


def build_web(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    family = get_family(manifest["inputs"]["family"])
    model_type = family.model_types[0]
    dtype = web_dtype(manifest.get("recipe"))
    graph_files = [p for p in artifact.iterdir()
                   if p.name.startswith(manifest["model_file"]) and p.is_file()]
    size = sum(p.stat().st_size for p in graph_files)
    if size > MAX_MODEL_BYTES:
        raise GemmaEdgeError(
            f"{artifact} holds {size / 2**30:.2f} GiB of model files, over the browser's 2 GiB "
            "ArrayBuffer limit", "package an int8 or int4 quantization of it --as web")
    missing = [src / name for src, name in RUNTIME_FILES if not (src / name).is_file()]
    if missing:
        raise GemmaEdgeError(f"the web runtime files are not installed ({missing[0]} is missing)",
                             f"run make install (or npm install --ignore-scripts in {ASSETS})")
    made = []
    for name in PAGE_FILES:
        shutil.copy2(ASSETS / name, tmp / name)
        made.append(name)
    (tmp / "runtime").mkdir()
    for src, name in RUNTIME_FILES:
        shutil.copy2(src / name, tmp / "runtime" / name)
        made.append(f"runtime/{name}")
    (tmp / "onnx").mkdir()
    onnx_name = f"model{DTYPE_SUFFIX[dtype]}.onnx"
    _write_graph(artifact / manifest["model_file"], tmp / "onnx" / onnx_name,
                 POSITION_START.get(model_type, 0))
    made += [f"onnx/{onnx_name}", f"onnx/{onnx_name}_data"]
    made += _write_configs(tmp, manifest, tokens, model_type, dtype, onnx_name)
    it = manifest["inputs"].get("variant") == "it"
    web = {"dtype": dtype, "family": family.name, "model_type": model_type,
           "recipe": manifest.get("recipe") or "fp32", "chat": it,
           "bos_token_id": tokens["bos_token_id"],
           "stop_token_ids": sorted(tokens["stop_tokens"].values()),
           "context_length": manifest["graph"].get("max_position_embeddings", 32768)}
    (tmp / "web.json").write_text(json.dumps(web, indent=2) + "\n")
    return [*made, "web.json"]


def _write_graph(src: Path, dst: Path, position_start: int) -> None:
    """A copy of the graph with its weights in `<name>_data` (the name transformers.js
    fetches), positions shifted to count from 0 when the runtime counts from 1."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src), load_external_data=True)
    graph = model.graph
    if position_start:
        inner = "position_ids_from_0"
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == "position_ids":
                    node.input[i] = inner
        graph.initializer.append(helper.make_tensor("position_start", onnx.TensorProto.INT64, [],
                                                    [position_start]))
        graph.node.insert(0, helper.make_node("Sub", ["position_ids", "position_start"], [inner],
                                              name="transformers_js_position_start"))
    _standard_quantized_gathers(graph)
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{dst.name}_data", size_threshold=1024)


def _standard_quantized_gathers(graph) -> None:
    """onnxruntime-web's WASM build has no com.microsoft GatherBlockQuantized (the 4-bit
    tied embedding of int4-all recipes): the same rows from standard ops, on the gathered
    rows only (nibbles low first, implicit zero point 8, one scale per block)."""
    import numpy as np
    from onnx import helper, numpy_helper

    nodes = []
    for node in graph.node:
        if node.op_type != "GatherBlockQuantized":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (len(node.input) > 3 or attrs.get("bits") != 4 or attrs.get("gather_axis", 0) != 0
                or attrs.get("quantize_axis", 1) != 1):
            raise GemmaEdgeError(f"the graph's {node.name} is a GatherBlockQuantized onnxruntime-web "
                                 "cannot run and gemma-edge cannot rewrite",
                                 "package an int8 or int4 recipe with an 8-bit embedding --as web")
        data, ids, scales = node.input
        block, b = int(attrs["block_size"]), f"{node.name}.web"
        for name, value in {"15": np.array(15, np.uint8), "4": np.array(4, np.uint8),
                            "zp": np.array(8, np.float32), "last": np.array([-1], np.int64),
                            "blocks": np.array([0, 0, -1, block], np.int64),
                            "rows": np.array([0, 0, -1], np.int64)}.items():
            graph.initializer.append(numpy_helper.from_array(value, f"{b}.{name}"))
        steps = [("Gather", [data, ids], "packed", {}),
                 ("BitwiseAnd", ["packed", "15"], "lo", {}),
                 ("BitShift", ["packed", "4"], "hi", {"direction": "RIGHT"}),
                 ("Unsqueeze", ["lo", "last"], "lo1", {}), ("Unsqueeze", ["hi", "last"], "hi1", {}),
                 ("Concat", ["lo1", "hi1"], "pairs", {"axis": -1}),
                 ("Reshape", ["pairs", "blocks"], "codes", {}),
                 ("Cast", ["codes"], "f", {"to": 1}), ("Sub", ["f", "zp"], "c", {}),
                 ("Gather", [scales, ids], "s", {}), ("Unsqueeze", ["s", "last"], "s1", {}),
                 ("Mul", ["c", "s1"], "w", {}), ("Reshape", ["w", "rows"], None, {})]
        consts = {"15", "4", "zp", "last", "blocks", "rows"}
        for op, inputs, out, kw in steps:
            ins = [f"{b}.{i}" if i in consts or i in {s[2] for s in steps} else i for i in inputs]
            nodes.append(helper.make_node(op, ins, [f"{b}.{out}" if out else node.output[0]],
                                          name=f"{b}.{op}.{out}", **kw))
    del graph.node[:]
    graph.node.extend(nodes)


def _write_configs(tmp: Path, manifest: dict, tokens: dict, model_type: str, dtype: str,
                   onnx_name: str) -> list[str]:
    """config.json and generation_config.json from the export's facts (the tokenizer files
    and chat_template.jinja are copied beside them by exporter.package)."""
    graph = manifest["graph"]
    stops = sorted(tokens["stop_tokens"].values())
    config = {
        "model_type": model_type, "architectures": [get_family(manifest["inputs"]["family"])
                                                    .causal_lm_class],
        "num_hidden_layers": graph["num_layers"], "num_attention_heads": graph["num_heads"],
        "num_key_value_heads": graph["num_kv_heads"], "head_dim": graph["head_dim"],
        "hidden_size": graph.get("hidden_size", graph["num_heads"] * graph["head_dim"]),
        "vocab_size": graph["vocab_size"], "sliding_window": graph.get("sliding_window"),
        "layer_types": graph.get("layer_types"),
        "max_position_embeddings": graph.get("max_position_embeddings", 32768),
        "bos_token_id": tokens["bos_token_id"], "eos_token_id": stops, "pad_token_id": 0,
        "transformers.js_config": {"dtype": dtype, "use_external_data_format": {onnx_name: 1}},
    }
    generation = {"bos_token_id": tokens["bos_token_id"], "eos_token_id": stops,
                  "pad_token_id": 0, "do_sample": False}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return ["config.json", "generation_config.json"]

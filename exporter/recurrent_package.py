"""The package of a RecurrentGemma ONNX artifact: graphs + tokenizer + state_io.json.

No engine we target runs Griffin: onnxruntime-genai's decoder model has no recurrent
state, LiteRT-LM's neither. So the package holds what any onnxruntime app needs to run
it itself: the graph (and its external data), the tokenizer, and state_io.json, which
documents the state tensors (names, shapes, dtypes, what each holds), the reset rule,
the token ids, and how prefill is fed (chunks; the state carries between calls). Our
runner (runtime_check.recurrent_runner) is its reference implementation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS

STATE_FILE = "state_io.json"


def build_recurrent_bundle(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    state = manifest.get("graph", {}).get("state")
    if not state:
        raise GemmaEdgeError(f"{artifact} records no recurrent state layout",
                             "re-export it with gemma-edge export (RecurrentGemma)")
    files = [p.name for p in artifact.iterdir() if p.name.startswith(FORMATS["onnx"].model_file)]
    for name in files:
        shutil.copy2(artifact / name, tmp / name)
    doc = {
        "runs_in": "onnxruntime with the state bound by the app (gemma-edge's "
                   "RecurrentOnnxRunner); not onnxruntime-genai, not LiteRT-LM",
        "inputs": {"input_ids": "int64 [1, S]", "position_ids": "int64 [1, S], consecutive"},
        "outputs": {"logits": "float32 [1, S, vocab], soft-capped"},
        "state": state["tensors"],
        "state_rules": [
            "start a sequence with every past_* tensor zero and position_ids from 0",
            "after each call, feed every present_* output back as its past_* input",
            state.get("reset", ""),
            "the attention state holds the last window - 1 positions, oldest first",
        ],
        "window": state.get("window"),
        "prefill_chunk": state.get("prefill_chunk"),
        "bos_token_id": tokens["bos_token_id"],
        "stop_token_ids": sorted(tokens["stop_tokens"].values()),
        "float_parameters": state.get("float_parameters", []),
    }
    (tmp / STATE_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return [*files, STATE_FILE]


def refuse_engine_package(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    """LiteRT-LM and transformers.js run decoder-only KV-cache models, not Griffin."""
    raise GemmaEdgeError(f"{artifact} is RecurrentGemma, which LiteRT-LM and transformers.js "
                         "do not run (no recurrent state in their engines)",
                         "package its ONNX export with --as onnx-bundle (graphs + tokenizer + "
                         "state_io.json, run by gemma-edge's runner)")

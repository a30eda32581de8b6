"""`gemma-edge check PACKAGE`: a package in the engine an app runs it in (LiteRT-LM for
`.litertlm`, onnxruntime-genai for ONNX bundles), against the PyTorch reference.

Two things only the engine shows:
- greedy: the engine's own continuation of each check prompt (its tokenizer, its BOS, its
  stop tokens, its kernels) matches the reference's greedy tokens up to the reference's
  first near-tie (top-2 logits < NEAR_TIE apart) or its first stop token; past a near-tie
  any faithful quantization may take the other branch. The engines stream text, so a match
  is a reference prefix whose decoded text the engine's output starts with.
- speed: TTFT, prefill and decode tokens/s and peak RSS from the engine's own counters
  (runtime_check.engines.benchmark, in a child process), beside the Python runner's numbers
  of the artifact's check: the engine is what ships.

The gates are the gates file's metrics named `engine_*` for the package's recipe family
(the artifact's own check evaluates the rest). The report goes to PACKAGE/check/engine.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir
from foundation.formats import CHECK_DIR, ENGINE_REPORT
from foundation.integrity import content_hash, verify_package
from foundation.sources import ReferenceModel


def matched_tokens(tokenizer, reference_ids: list[int], text: str) -> int:
    """Leading reference tokens whose decoded text the engine's text starts with."""
    n = 0
    while n < len(reference_ids) and text.startswith(
            tokenizer.decode(reference_ids[: n + 1], skip_special_tokens=True)):
        n += 1
    return n


def required_tokens(reference_ids: list[int], margins: list[float], stops: set[int],
                    near_tie: float) -> int:
    """How many leading reference tokens an engine must reproduce: up to (not including) the
    first near-tie, and no further than the first stop token (where the engine ends)."""
    for i, (token, margin) in enumerate(zip(reference_ids, margins, strict=True)):
        if margin < near_tie:
            return i
        if token in stops:
            return i + 1
    return len(reference_ids)


def check_package(package: str | Path, ref: ReferenceModel, *, greedy_tokens: int = 32,
                  prompts: tuple[str, ...] | None = None, gates_file: str | None = None,
                  threads: int = 2, latency: bool = True) -> dict[str, Any]:
    from runtime_check.check import DEFAULT_PROMPTS, NEAR_TIE
    from runtime_check.engines import benchmark, open_engine, package_context
    from runtime_check.gates import evaluate_gates, gates_of, load_gates, recipe_family
    from runtime_check.runner import greedy_margins
    from runtime_check.torch_runner import TorchRunner

    package = Path(package)
    manifest = verify_package(package)
    gates = load_gates(gates_file)
    recipe = manifest.get("recipe", "fp32")
    started = time.time()
    reference = TorchRunner(ref.adapter_model or ref.model, threads=threads)
    stops = set(ref.stop_token_ids)
    engine = open_engine(package, threads=threads)
    greedy = []
    try:
        for prompt in prompts or DEFAULT_PROMPTS:
            ids = ref.encode(prompt)
            # the same memo as the artifact's check: one reference run per prompt per build
            expect, margins = ref.memoized("greedy", (tuple(ids), greedy_tokens),
                                           lambda ids=ids: greedy_margins(reference, ids, greedy_tokens))
            text = "".join(engine.generate(prompt, greedy_tokens))
            match = matched_tokens(ref.tokenizer, expect, text)
            need = required_tokens(expect, margins, stops, NEAR_TIE)
            greedy.append({"prompt": prompt, "match": match, "of": len(expect), "required": need,
                           "agrees": match >= need, "engine": text,
                           "reference": ref.tokenizer.decode(expect, skip_special_tokens=True)})
    finally:
        engine.close()
    timing = None
    if latency:
        room = package_context(package, manifest)
        prefill, decode = min(128, room // 2), min(64, room // 4)
        timing = benchmark(package, prefill_tokens=prefill, decode_tokens=decode, threads=threads)
    metrics = {"engine_greedy_to_tie": sum(g["agrees"] for g in greedy) / len(greedy)}
    family = recipe_family(recipe)
    results = evaluate_gates(metrics, gates_of(gates.get(family, []), engine=True))
    return {
        "package": str(package),
        "package_sha256": content_hash(manifest),
        "name": package.name,
        "kind": manifest.get("package"),
        "engine": engine.name,
        "artifact": Path(manifest.get("inputs", {}).get("artifact", "")).name,
        "recipe": recipe,
        "source": ref.spec,
        "metrics": metrics,
        "greedy": greedy,
        "latency": timing,
        "gates": results,
        "passed": all(r["passed"] for r in results),
        "check_seconds": round(time.time() - started, 2),
    }


def write_engine_report(result: dict[str, Any], package: str | Path) -> Path:
    """PACKAGE/check/engine.json, replaced atomically."""
    target = Path(package) / CHECK_DIR
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / ENGINE_REPORT).write_text(json.dumps(result, indent=2) + "\n")
    return target / ENGINE_REPORT

"""`gemma-edge check`: is this artifact still the model? Parity on held-out text, greedy
agreement on prompts, gates, and a report written next to the artifact.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError
from foundation.integrity import content_hash, verify_artifact
from foundation.sources import ReferenceModel
from runtime_check.gates import evaluate_gates, gates_of, load_gates, recipe_family
from runtime_check.parity import greedy_match_length, parity_metrics
from runtime_check.report import REPORT_SCHEMA
from runtime_check.runner import greedy_generate, greedy_margins, teacher_forced_logits

log = logging.getLogger("gemma_edge")

# top-1 minus top-2 logit of the reference below which a greedy step is a near-tie: int8
# artifacts of the 270M move logits by 0.05-2, and its greedy paths on DEFAULT_PROMPTS have
# gaps of 0.005 and 0.017 (docs/results.md, greedy agreement)
NEAR_TIE = 0.1
DEFAULT_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
)


def _release_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise), so a child process can use it."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def check_artifact(artifact: str | Path, ref: ReferenceModel, *, text: str,
                   max_tokens: int = 512, prefill_tokens: int = 128, decode_tokens: int = 128,
                   greedy_tokens: int = 32,
                   prompts: tuple[str, ...] = DEFAULT_PROMPTS, gates_file: str | None = None,
                   threads: int | None = 2, latency: bool = True) -> dict[str, Any]:
    """Teacher-force `text` through reference and artifact, compare, evaluate the gates.

    The text goes in as prefill `prefill_tokens`, `decode_tokens` decode steps, then the
    rest as a prefill at that offset: both entry points and the cache between them, at
    a third of the time of decoding everything (decode is one token per model call)."""
    from foundation.families import implementation
    from foundation.formats import resolve
    from runtime_check.open_runner import open_runner

    # the family's reference runner: the default, or its own (RecurrentGemma's state)
    TorchRunner = resolve(implementation(ref.family.name, "torch.runner",  # noqa: N806
                                         "runtime_check.torch_runner:TorchRunner"))

    artifact = Path(artifact)
    manifest = verify_artifact(artifact)  # never certify weights other than the manifest's
    if manifest["inputs"].get("source_sha256") not in (None, ref.sha256):
        log.warning("note: %s was exported from a different source than %s", artifact, ref.spec)
    started = time.time()
    runner = open_runner(artifact, threads=threads)
    limit = getattr(runner, "cache_len", None)
    ids = ref.encode(text, chat=False)[: max_tokens if limit is None else min(max_tokens, limit)]
    if len(ids) < 16:
        raise GemmaEdgeError(f"the evaluation text has only {len(ids)} tokens",
                             "pass a longer --text (a few paragraphs)")
    split = min(prefill_tokens, len(ids) // 2)
    steps = min(decode_tokens, len(ids) - split)
    log.info("parity over %d tokens (prefill %d, %d decode steps, then prefill %d)", len(ids),
             split, steps, len(ids) - split - steps)
    # an adapted source: the unmerged PEFT model, so the merge itself is under test too
    reference = TorchRunner(ref.adapter_model or ref.model, threads=threads)
    # the reference's side is the same for every artifact a build checks: computed once
    ref_logits = ref.memoized("logits", (tuple(ids), split, steps),
                              lambda: teacher_forced_logits(reference, ids, split, steps),
                              keep_one=True)
    art_logits = teacher_forced_logits(runner, ids, split, steps)
    metrics = parity_metrics(ref_logits, art_logits, ids)
    del ref_logits, art_logits

    greedy = []
    for prompt in prompts:
        prompt_ids = ref.encode(prompt)
        expect, margins = ref.memoized("greedy", (tuple(prompt_ids), greedy_tokens),
                                       lambda ids=prompt_ids: greedy_margins(reference, ids, greedy_tokens))
        got = list(greedy_generate(runner, prompt_ids, greedy_tokens))
        ties = [i for i, m in enumerate(margins) if m < NEAR_TIE]
        greedy.append({"prompt": prompt, "match": greedy_match_length(expect, got),
                       "of": len(expect), "reference": ref.tokenizer.decode(expect),
                       "artifact": ref.tokenizer.decode(got),
                       # the reference's own first near-tie: a parting there is a tie flip
                       "reference_near_tie_at": ties[0] if ties else None,
                       "reference_near_tie_margin": margins[ties[0]] if ties else None})
    runner.close()
    del runner
    _release_memory()  # the latency child needs it: LiteRT weight-only int8 peaks at 13 GB
    timing = None
    if latency:
        from runtime_check.latency import measure_latency

        log.info("latency: warm-up + 5 repetitions in a child process")
        timing = measure_latency(artifact, ids, threads=threads or 2)
    metrics["greedy_match_fraction"] = float(np.mean([g["match"] / max(g["of"], 1)
                                                      for g in greedy]))
    recipe = manifest.get("recipe", "fp32")
    family = recipe_family(recipe)
    gates = load_gates(gates_file)
    if family not in gates:
        raise GemmaEdgeError(f"no gates for recipe family '{family}'",
                             f"add '{family}' to the gates file")
    results = evaluate_gates(metrics, gates_of(gates[family], engine=False))
    size = sum(f["bytes"] for name, f in manifest["files"].items()
               if name.startswith("model"))
    return {
        "schema": REPORT_SCHEMA,
        "artifact": str(artifact),
        "artifact_sha256": content_hash(manifest),  # what this check verified
        "name": artifact.name,
        "format": manifest.get("format"),
        "recipe": recipe,
        "size_bytes": size,
        "source": ref.spec,
        "source_sha256": ref.sha256,
        "adapter": ref.adapter,
        "notes": ref.notes,
        "text_tokens": len(ids),
        "prefill_tokens": split,
        "decode_tokens": steps,
        "metrics": metrics,
        "greedy": greedy,
        "gates": results,
        "latency": timing,
        "layers": manifest.get("quantization", {}).get("layers"),
        "passed": all(r["passed"] for r in results),
        "check_seconds": round(time.time() - started, 2),
    }

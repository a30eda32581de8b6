"""`gemma-edge check ARTIFACT --against SOURCE --image FILE ...`: a vision artifact against the
transformers reference, on real images.

Per image: the vision encoder's features (max |delta|, cosine), then the image + the
family's prompt + held-out text teacher-forced through both (prefill of image and prompt,
decode steps, prefill of the rest), metrics over the text positions only, and a greedy
caption of `greedy_tokens` tokens. ShieldGemma 2: the Yes/No probability of every policy.
Gates as data (gates/vision.json); the result has the text check's layout, so reports and
summaries read it unchanged.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError
from foundation.images import pixel_values
from foundation.integrity import content_hash, verify_artifact
from foundation.sources import ReferenceModel
from foundation.vision_prompt import POLICIES, policy_prompt_ids, prompt_ids
from runtime_check.gates import evaluate_gates, load_gates, recipe_family
from runtime_check.parity import greedy_match_length, parity_metrics
from runtime_check.report import REPORT_SCHEMA
from runtime_check.runner import greedy_generate, teacher_forced_logits
from runtime_check.vision_run import yes_probability

log = logging.getLogger("gemma_edge")

DEFAULT_PROMPTS = {"prefix": "caption en", "image_blocks": "Describe this image."}
def load_vision_gates(path: str | None) -> dict[str, list[dict[str, Any]]]:
    if path is not None:
        return load_gates(path)
    import json

    data = json.loads((resources.files("runtime_check") / "gates" / "vision.json").read_text())
    return {k: v["gates"] for k, v in data.items() if not k.startswith("_")}


def check_vision_artifact(artifact: str | Path, ref: ReferenceModel, images: list[str | Path], *,
                          text: str, max_tokens: int = 64, greedy_tokens: int = 32,
                          gates_file: str | None = None, threads: int | None = 2) -> dict[str, Any]:
    from runtime_check.open_runner import open_runner
    from runtime_check.vision_torch_runner import TorchVisionRunner

    artifact = Path(artifact)
    manifest = verify_artifact(artifact)
    facts = manifest.get("vision")
    if not ref.family.vision or not facts:
        raise GemmaEdgeError(f"--image needs a vision-language model; {ref.spec} is "
                             f"{ref.family.title}" if not ref.family.vision else
                             f"{artifact} is not a vision export", "drop --image, or check a "
                             "vision export (PaliGemma, Gemma 3 4B+, ShieldGemma 2) against its source")
    started = time.time()
    settings = facts["preprocessing"]
    pixels = [pixel_values([image], settings) for image in images]  # bad files fail here
    runner = open_runner(artifact, threads=threads)
    reference = TorchVisionRunner(ref.model, threads=threads)
    body = ref.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    classifier = facts.get("classifier")
    prompts = ([(name, policy_prompt_ids(ref, name)) for name in POLICIES] if classifier else
               [(None, prompt_ids(ref, DEFAULT_PROMPTS[facts["attention"]]))])
    feat_max, cosines, ref_rows, art_rows, row_ids, greedy, probs = 0.0, [], [], [], [], [], []
    for image, px in zip(images, pixels, strict=True):
        want, got = reference.image_features(px), runner.image_features(px)
        feat_max = max(feat_max, float(np.abs(want - got).max()))
        cosines.append(float((want * got).sum() / (np.linalg.norm(want) * np.linalg.norm(got))))
        for policy, ids in prompts:
            rows = []
            for r in (reference, runner):
                r.reset()
                r.set_images(px)
                rows.append(teacher_forced_logits(r, ids + body, len(ids), min(8, len(body))))
            n = len(ids) - 1  # the last prompt position predicts the first text token
            ref_rows.append(rows[0][n:])
            art_rows.append(rows[1][n:])
            row_ids += (ids + body)[n:]
            if classifier:
                yes_no = (classifier["yes_token_id"], classifier["no_token_id"])
                probs.append({"image": str(image), "policy": policy,
                              "reference": yes_probability(rows[0][n], yes_no),
                              "artifact": yes_probability(rows[1][n], yes_no)})
                continue
            caps = []
            for r in (reference, runner):
                r.set_images(px)
                caps.append(list(greedy_generate(r, ids, greedy_tokens)))
            greedy.append({"prompt": f"{Path(image).name}: {ref.tokenizer.decode(ids[-12:])}",
                           "match": greedy_match_length(caps[0], caps[1]), "of": len(caps[0]),
                           "reference": ref.tokenizer.decode(caps[0]),
                           "artifact": ref.tokenizer.decode(caps[1]),
                           "reference_near_tie_at": None, "reference_near_tie_margin": None})
    latency = _latency(runner, pixels[0], prompts[0][1], greedy_tokens)
    runner.close()
    metrics = parity_metrics(np.concatenate(ref_rows), np.concatenate(art_rows), row_ids)
    metrics["greedy_match_fraction"] = float(np.mean([g["match"] / max(g["of"], 1)
                                                      for g in greedy])) if greedy else 1.0
    metrics["features_max_abs_delta"] = feat_max
    metrics["features_cosine_min"] = min(cosines)
    if classifier:
        metrics["classifier_max_abs_delta_p"] = max(abs(p["reference"] - p["artifact"]) for p in probs)
    recipe = manifest.get("recipe", "fp32")
    gates = load_vision_gates(gates_file)
    family = recipe_family(recipe)
    if family not in gates:
        raise GemmaEdgeError(f"no vision gates for recipe family '{family}'",
                             f"add '{family}' to the gates file")
    applicable = [g for g in gates[family] if classifier or not g["metric"].startswith("classifier_")]
    results = evaluate_gates(metrics, applicable)
    return {
        "schema": REPORT_SCHEMA, "artifact": str(artifact), "artifact_sha256": content_hash(manifest),
        "name": artifact.name, "format": manifest.get("format"), "recipe": recipe,
        "size_bytes": sum(f["bytes"] for name, f in manifest["files"].items()
                          if name.endswith((".onnx", ".onnx.data", ".tflite"))),
        "source": ref.spec, "source_sha256": ref.sha256, "adapter": None, "notes": ref.notes,
        "text_tokens": len(row_ids),
        # per image and prompt: prefill image + prompt, decode steps, prefill the rest
        "prefill_tokens": len(ids), "decode_tokens": min(8, len(body)),
        "metrics": metrics, "greedy": greedy, "gates": results, "latency": None,
        "layers": None, "passed": all(r["passed"] for r in results),
        "vision": {"images": [str(i) for i in images], "features_cosine": cosines,
                   "features_max_abs_delta": feat_max, "probabilities": probs,
                   "preprocessing": settings, "latency": latency},
        "check_seconds": round(time.time() - started, 2),
    }


def _latency(runner, px, ids, steps: int) -> dict[str, Any]:
    """One timed greedy run of the artifact on the first image (threads as the check's):
    the vision encoder alone, the time to the first token (encoder + prefill of the image
    and prompt), and decode steps per second. Wall time on a shared machine: noisy."""
    t0 = time.perf_counter()
    runner.image_features(px)
    encoder = time.perf_counter() - t0
    runner.reset()
    runner.set_images(px)
    t0 = time.perf_counter()
    token = int(np.argmax(runner.prefill(ids)[-1]))
    ttft = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        token = int(np.argmax(runner.decode(token)))
    decode = time.perf_counter() - t0
    return {"vision_encoder_seconds": round(encoder, 4), "ttft_seconds": round(ttft, 4),
            "prompt_tokens": len(ids), "decode_tokens": steps,
            "decode_tokens_per_second": round(steps / decode, 2) if steps and decode > 0 else None}

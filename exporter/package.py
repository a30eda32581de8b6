"""Packages an app ships: `.litertlm` for the LiteRT-LM engine, an ONNX bundle for
onnxruntime-genai. Each is a directory with the model files and a manifest.json that
lists every file's sha256, the source and its hash, the recipe, the tools, the token
metadata (BOS, stop tokens) and the parity summary and gate results of the artifact's
last `gemma-edge check`. foundation.integrity.verify_package re-hashes before anything
loads a package.

Token metadata is derived, not typed: BOS and stop-token ids are looked up in the
package's own tokenizer (the family's stop tokens `<eos>` and `<end_of_turn>`), and a
package whose metadata does not match its tokenizer is refused. Wrong stop tokens are
the most reported LiteRT-LM packaging bug: the engine then never stops.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir, tree_bytes, write_manifest
from foundation.errors import GemmaEdgeError
from foundation.families import implementation
from foundation.formats import (
    CHECK_DIR,
    CHECK_REPORT,
    FORMATS,
    PACKAGE_KINDS,
    get_package_kind,
    resolve,
)
from foundation.integrity import content_hash, refuse_overlap, verify_artifact

log = logging.getLogger("gemma_edge")

LITERTLM_FILE = PACKAGE_KINDS["litertlm"].model_file
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def token_metadata(artifact: Path, family_name: str) -> dict[str, Any]:
    """BOS and stop-token ids from the artifact's own tokenizer."""
    from foundation.families import get_family

    tokenizer = json.loads((artifact / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    if isinstance(vocab, list):  # unigram: [[piece, score], ...]
        vocab = {piece: i for i, (piece, _score) in enumerate(vocab)}
    for added in tokenizer.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    config = json.loads((artifact / "tokenizer_config.json").read_text())
    bos = config.get("bos_token", "<bos>")
    bos = bos["content"] if isinstance(bos, dict) else bos
    family = get_family(family_name)
    stops = {t: vocab[t] for t in family.stop_tokens if t in vocab}
    if bos not in vocab or "<eos>" not in stops:
        raise GemmaEdgeError(f"the tokenizer in {artifact} has no {bos} or <eos> token",
                             "re-export from a Gemma checkpoint with its own tokenizer")
    return {"bos_token": bos, "bos_token_id": vocab[bos], "stop_tokens": stops}


def build_litertlm(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    from litert_lm_builder import litertlm_builder as lb

    from exporter.prefill_trim import strip_prefill_logits

    graph = manifest.get("graph", {})
    cache = graph.get("cache_length") or 1024
    model_type = "gemma3 {}" if manifest["inputs"]["family"] == "gemma3_text" else "generic_model {}"
    stops = "\n".join(f"stop_tokens {{ token_ids {{ ids: {i} }} }}" for i in tokens["stop_tokens"].values())
    meta = tmp / "llm_metadata.textproto"
    meta.write_text(f"start_token {{ token_ids {{ ids: {tokens['bos_token_id']} }} }}\n{stops}\n"
                    f"llm_model_type {{ {model_type} }}\nmax_num_tokens: {cache}\n")
    builder = lb.LitertLmFileBuilder()
    builder.add_system_metadata(lb.Metadata(key="author", value="gemma-edge", dtype=lb.DType.STRING))
    template = artifact / "chat_template.jinja"
    it = manifest["inputs"].get("variant") == "it"
    builder.add_llm_metadata(str(meta), jinja_prompt_template_path=str(template) if it else None)
    # LiteRT-LM never reads prefill logits: package the model without them (prefill_trim.py)
    trimmed = tmp / "prefill_decode.tflite"
    removed = strip_prefill_logits(artifact / manifest["model_file"], trimmed)
    log.info("prefill signatures without logits: %s ops removed",
             ", ".join(f"{k} {v}" for k, v in removed.items()) or "no")
    builder.add_tflite_model(str(trimmed), lb.TfLiteModelType.PREFILL_DECODE)
    builder.add_hf_tokenizer(str(artifact / "tokenizer.json"))
    with open(tmp / LITERTLM_FILE, "wb") as fh:
        builder.build(fh)
    meta.unlink()
    trimmed.unlink()
    return [LITERTLM_FILE]


def genai_config(manifest: dict, tokens: dict) -> dict[str, Any]:
    graph = manifest["graph"]
    layers = graph["num_layers"]
    context = graph.get("max_position_embeddings", 32768)
    return {
        "model": {
            "type": manifest["inputs"]["family"],
            "bos_token_id": tokens["bos_token_id"],
            "eos_token_id": sorted(tokens["stop_tokens"].values()),
            "pad_token_id": 0,
            "vocab_size": graph["vocab_size"],
            "context_length": context,
            "decoder": {
                "session_options": {"log_id": "gemma-edge", "provider_options": []},
                "filename": "model.onnx",
                "head_size": graph["head_dim"],
                "hidden_size": graph.get("hidden_size", graph["head_dim"] * graph["num_heads"]),
                "num_attention_heads": graph["num_heads"],
                "num_key_value_heads": graph["num_kv_heads"],
                "num_hidden_layers": layers,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        # GroupQueryAttention appends into one preallocated past/present buffer per layer
        # (no cache copy per step) and masks the sliding window itself, so the cache need not slide
        "search": {"do_sample": False, "num_beams": 1, "max_length": min(1024, context),
                   "past_present_share_buffer": True, "top_k": 1, "temperature": 1.0},
    }


def build_onnx_bundle(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    files = [p.name for p in artifact.iterdir() if p.name.startswith(FORMATS["onnx"].model_file)]
    for name in files:
        shutil.copy2(artifact / name, tmp / name)
    (tmp / "genai_config.json").write_text(json.dumps(genai_config(manifest, tokens), indent=2) + "\n")
    return [*files, "genai_config.json"]


def package(artifact: str | Path, out: str | Path, kind: str, *, overwrite: bool = False,
            record: dict | None = None) -> dict:
    """Package ARTIFACT as KIND into OUT; `record` goes into the manifest (a build's key)."""
    artifact, out = Path(artifact), Path(out)
    spec = get_package_kind(kind)
    manifest = verify_artifact(artifact)
    refuse_overlap(out, artifact)
    if manifest.get("format") != spec.format:
        raise GemmaEdgeError(f"--as {kind} needs a {spec.format} artifact, {artifact} is "
                             f"{manifest.get('format')}", f"package a {spec.format} export")
    if out.exists() and not overwrite:
        raise GemmaEdgeError(f"{out} already exists", "pass --overwrite or choose another --out")
    started = time.time()
    tokens = token_metadata(artifact, manifest["inputs"]["family"])
    check = _last_check(artifact, content_hash(manifest))
    with atomic_output_dir(out, overwrite=overwrite, needs_bytes=tree_bytes(artifact)) as tmp:
        builder = implementation(manifest["inputs"].get("family"), f"{kind}.builder", spec.builder)
        made = resolve(builder)(artifact, tmp, manifest, tokens)
        for name in (*TOKENIZER_FILES, "chat_template.jinja"):
            if (artifact / name).is_file():
                shutil.copy2(artifact / name, tmp / name)
                made.append(name)
        result = write_manifest(
            tmp, stage="package", started=started, outputs=made, packages=spec.tools,
            inputs={**manifest["inputs"], "artifact": str(artifact),
                    "artifact_sha256": manifest["files"][manifest["model_file"]]["sha256"]},
            extra={"package": kind, "format": manifest["format"], "recipe": manifest.get("recipe"),
                   "model_file": spec.model_file if spec.model_file in made else manifest["model_file"],
                   "graph": manifest.get("graph", {}), "tokens": tokens, "check": check,
                   **{k: manifest[k] for k in ("graphs", "vision") if k in manifest},  # docs/vision.md
                   **(record or {})},
        )
    log.info("wrote %s", out)
    return result


def _last_check(artifact: Path, artifact_sha256: str) -> dict | None:
    """The artifact's last check, if it verified exactly these files (else an error: a
    package must never carry a check of other weights)."""
    report = artifact / CHECK_DIR / CHECK_REPORT
    if not report.is_file():
        return None
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
        entry = (data.get("artifacts") or [data])[0]
        checked = entry.get("artifact_sha256")
    except (ValueError, AttributeError, IndexError, TypeError):
        raise GemmaEdgeError(f"{report} is not a readable check report",
                             f"run gemma-edge check {artifact} again") from None
    if checked != artifact_sha256:
        raise GemmaEdgeError(f"{report} is the check of other files than {artifact} now holds",
                             f"run gemma-edge check {artifact} again, then package")
    metrics = entry.get("metrics", {})
    keep = ("kld_mean", "kld_p99", "top1_agreement", "ppl_ratio", "max_abs_delta_logit",
            "greedy_match_fraction")
    return {"passed": entry.get("passed"), "artifact_sha256": checked,
            "metrics": {k: metrics[k] for k in keep if k in metrics},
            "gates": entry.get("gates", [])}

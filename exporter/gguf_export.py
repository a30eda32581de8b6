"""torch -> GGUF for llama.cpp and Ollama: the reference model's weights, F32 (or F16).

What llama.cpp's convert_hf_to_gguf.py does for Gemma, from the loaded model instead of
the checkpoint files, so every source (HF directory, GGUF, tiny) exports the same way:

- tensor names through gguf-py's own name map (`blk.N.attn_q.weight`, ...);
- Gemma's RMSNorm computes x * (1 + w): every `*norm.weight` is written as w + 1;
- the tied LM head is not written (llama.cpp reuses `token_embd.weight`);
- hyperparameters as the converter writes them, plus what it leaves to llama.cpp's
  per-architecture defaults when a model differs from them: the per-layer sliding-window
  pattern (`attention.sliding_window_pattern`, from `layer_types`: llama.cpp assumes 5
  local : 1 global for Gemma 3, 1 : 1 for Gemma 2) and Gemma 3's local RoPE base;
- tokenizer and chat template metadata (exporter/gguf_vocab.py).

Every tensor is stored F32: the float export `check` holds to the fp32 reference, and
what `quantize --recipe q8_0 / q4_0` reads (an F16 file is one `llama-quantize ... F16`
away; it is not written here).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from foundation.artifacts import atomic_output_dir, fp32_weight_bytes, write_manifest
from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS
from foundation.sources import ReferenceModel

log = logging.getLogger("gemma_edge")

MODEL_FILE = FORMATS["gguf"].model_file


def export_gguf(ref: ReferenceModel, out_dir: str | Path, *, overwrite: bool = False,
                record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write OUT_DIR/{model.gguf, tokenizer files, manifest.json}."""
    if not ref.family.gguf_architectures:
        raise GemmaEdgeError(f"the {ref.family.title} family has no GGUF export path "
                             "(llama.cpp's Gemma graphs are the decoder-only text families)",
                             "export it with --format onnx or tflite")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GemmaEdgeError(f"{out_dir} already exists", "pass --overwrite or choose another --out")
    started = time.time()
    with atomic_output_dir(out_dir, overwrite=overwrite,
                           needs_bytes=fp32_weight_bytes(ref.model)) as tmp:
        log.info("exporting %s to GGUF (F32)", ref.spec)
        facts = write_gguf(ref, tmp / MODEL_FILE)
        ref.tokenizer.save_pretrained(tmp)
        manifest = write_manifest(
            tmp, stage="export", started=started, packages=FORMATS["gguf"].export_tools,
            inputs={"source": ref.spec, "source_sha256": ref.sha256, "family": ref.family.name,
                    "variant": ref.variant},
            extra={"format": "gguf", "recipe": "fp32",
                   "model_file": MODEL_FILE, "graph": facts, "notes": ref.notes,
                   **(record or {})},
        )
    log.info("wrote %s (%.1f s)", out_dir, manifest["wall_seconds"])
    return manifest


def gguf_tensors(ref: ReferenceModel) -> list[tuple[str, str, np.ndarray]]:
    """(HF parameter name, GGUF tensor name, fp32 array as llama.cpp reads it) per tensor."""
    import gguf

    config = ref.config
    arch = gguf_arch(ref)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    out = []
    for name, param in ref.model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise GemmaEdgeError(f"no GGUF tensor name for '{name}' ({ref.family.title})",
                                 "this checkpoint has tensors llama.cpp's Gemma graph does not read")
        array = param.detach().float().cpu().numpy()
        if name.endswith("norm.weight"):
            array = array + np.float32(1.0)  # Gemma RMSNorm: x * (1 + w)
        out.append((name, mapped, np.ascontiguousarray(array, dtype=np.float32)))
    return out


def gguf_arch(ref: ReferenceModel):
    import gguf

    wanted = ref.family.gguf_architectures[0]
    for arch, arch_name in gguf.MODEL_ARCH_NAMES.items():
        if arch_name == wanted:
            return arch
    raise GemmaEdgeError(f"gguf-py knows no architecture '{wanted}'", "upgrade the gguf package")


def write_gguf(ref: ReferenceModel, path: Path) -> dict[str, Any]:
    import gguf

    from exporter.gguf_vocab import write_vocab

    arch = gguf_arch(ref)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(ref.spec).name or ref.spec)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    hparams = write_hparams(writer, ref)
    template = ref.tokenizer.chat_template or ref.family.chat_template
    vocab = write_vocab(writer, ref.tokenizer, ref.config.vocab_size, template)
    count = 0
    for _, name, array in gguf_tensors(ref):
        writer.add_tensor(name, array)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": gguf.MODEL_ARCH_NAMES[arch], "dtype": "f32", "tensors": count,
            "hparams": hparams, "tokenizer": vocab}


def write_hparams(writer, ref: ReferenceModel) -> dict[str, Any]:
    """The `<arch>.*` keys llama.cpp reads for Gemma 1/2/3; returns them for the manifest."""
    c = ref.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = _rope_thetas(c)
    facts: dict[str, Any] = {
        "context_length": int(c.max_position_embeddings), "embedding_length": int(c.hidden_size),
        "block_count": int(c.num_hidden_layers), "feed_forward_length": int(c.intermediate_size),
        "head_count": int(c.num_attention_heads),
        "head_count_kv": int(getattr(c, "num_key_value_heads", None) or c.num_attention_heads),
        "key_length": int(head_dim), "rms_eps": float(c.rms_norm_eps),
        "rope_freq_base": rope["full_attention"],
    }
    writer.add_context_length(facts["context_length"])
    writer.add_embedding_length(facts["embedding_length"])
    writer.add_block_count(facts["block_count"])
    writer.add_feed_forward_length(facts["feed_forward_length"])
    writer.add_head_count(facts["head_count"])
    writer.add_head_count_kv(facts["head_count_kv"])
    writer.add_layer_norm_rms_eps(facts["rms_eps"])
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(facts["rope_freq_base"])
    scalar = getattr(c, "query_pre_attn_scalar", None)
    if scalar is not None and int(scalar) != int(head_dim) and c.num_hidden_layers != 62:
        raise GemmaEdgeError(f"query_pre_attn_scalar {scalar} differs from head_dim {head_dim}",
                             "llama.cpp scales attention by 1/sqrt(head_dim) for this size of Gemma")
    scaling = _rope_scaling(c)
    if scaling:
        writer.add_rope_scaling_type(gguf_rope_linear())
        writer.add_rope_scaling_factor(scaling)
        facts["rope_scaling_linear"] = scaling
    if getattr(c, "attn_logit_softcapping", None):
        writer.add_attn_logit_softcapping(float(c.attn_logit_softcapping))
        facts["attn_logit_softcapping"] = float(c.attn_logit_softcapping)
    if getattr(c, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(c.final_logit_softcapping))
        facts["final_logit_softcapping"] = float(c.final_logit_softcapping)
    if getattr(c, "sliding_window", None):
        layer_types = getattr(c, "layer_types", None) or []
        pattern = [t == "sliding_attention" for t in layer_types]
        writer.add_sliding_window(int(c.sliding_window))
        writer.add_sliding_window_pattern(pattern)
        facts.update(sliding_window=int(c.sliding_window), sliding_layers=sum(pattern))
        if "sliding_attention" in rope:
            writer.add_rope_freq_base_swa(rope["sliding_attention"])
            facts["rope_freq_base_swa"] = rope["sliding_attention"]
    return facts


def _rope_thetas(c) -> dict[str, float]:
    """RoPE base per attention type: transformers 5 keeps them in rope_parameters (per
    layer type for Gemma 3), older configs in rope_theta / rope_local_base_freq."""
    params = getattr(c, "rope_parameters", None) or {}
    if "full_attention" in params:
        return {kind: float(p.get("rope_theta", 10000.0)) for kind, p in params.items()}
    theta = float(params.get("rope_theta") or getattr(c, "rope_theta", None) or 10000.0)
    out = {"full_attention": theta}
    if getattr(c, "rope_local_base_freq", None):
        out["sliding_attention"] = float(c.rope_local_base_freq)
    return out


def _rope_scaling(c) -> float | None:
    params = getattr(c, "rope_parameters", None) or {}
    full = params.get("full_attention", params)
    kind = full.get("rope_type", "default")
    if kind == "default":
        return None
    if kind != "linear":
        raise GemmaEdgeError(f"RoPE scaling '{kind}' has no GGUF form here",
                             "export a model with default or linear RoPE scaling")
    return float(full["factor"])


def gguf_rope_linear():
    import gguf

    return gguf.RopeScalingType.LINEAR

"""What `gemma-edge info` reports about a loaded model."""

from __future__ import annotations

from typing import Any

from foundation.sources import ReferenceModel


def describe(ref: ReferenceModel) -> dict[str, Any]:
    """Architecture, parameter split (embedding vs transformer), sizes, tokenizer, variant."""
    model, cfg, tok = ref.model, ref.config.get_text_config(), ref.tokenizer  # VLMs: the decoder's
    embedding = model.get_input_embeddings().weight
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # tied weights are counted once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    from foundation.vision_prompt import generator

    head = generator(model, ref.family).get_output_embeddings()  # ShieldGemma 2 wraps its LM
    tied = head is not None and head.weight is embedding
    layer_types = list(getattr(cfg, "layer_types", None) or [])
    return {
        "source": ref.spec,
        "kind": ref.kind,
        "family": ref.family.name,
        "family_title": ref.family.title,
        "architecture": type(model).__name__,
        "variant": ref.variant,
        "sha256": ref.sha256,
        "layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "attention_heads": cfg.num_attention_heads,
        "kv_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "sliding_window": getattr(cfg, "sliding_window", None),
        "sliding_layers": layer_types.count("sliding_attention"),
        "full_layers": layer_types.count("full_attention") if layer_types else cfg.num_hidden_layers,
        "quirks": list(ref.family.quirks),
        "parameters": {
            "total": total,
            "embedding": embedding.numel(),
            "transformer": total - embedding.numel(),
            "embedding_share": round(embedding.numel() / total, 4),
            "lm_head_tied": tied,
        },
        "sizes_mib": {"fp32": round(total * 4 / 2**20, 1), "bf16": round(total * 2 / 2**20, 1)},
        "tokenizer": {
            "class": type(tok).__name__,
            "vocab": len(tok),
            "bos": tok.bos_token,
            "eos": tok.eos_token,
            "stop_tokens": [tok.convert_ids_to_tokens(i) for i in ref.stop_token_ids],
            "chat_template": bool(tok.chat_template),
        },
        "load_seconds": ref.load_seconds,
        "from_cache": ref.from_cache,
        "notes": ref.notes,
    }


def format_summary(info: dict[str, Any]) -> str:
    p = info["parameters"]
    lines = [
        f"{info['source']}  ({info['family_title']}, {info['architecture']}, "
        f"{info['variant'].upper()})",
        f"  layers {info['layers']}, hidden {info['hidden_size']}, ffn {info['intermediate_size']}, "
        f"heads {info['attention_heads']} q / {info['kv_heads']} kv x {info['head_dim']}",
        f"  attention: {info['sliding_layers']} sliding (window {info['sliding_window']}) / "
        f"{info['full_layers']} global layers",
        f"  parameters: {p['total']:,} = embedding {p['embedding']:,} "
        f"({p['embedding_share']:.0%}{', tied LM head' if p['lm_head_tied'] else ''}) "
        f"+ transformer {p['transformer']:,}",
        f"  size: {info['sizes_mib']['fp32']} MiB fp32, {info['sizes_mib']['bf16']} MiB bf16",
        f"  tokenizer: {info['tokenizer']['class']}, vocab {info['tokenizer']['vocab']:,}, "
        f"bos {info['tokenizer']['bos']}, stops {' '.join(info['tokenizer']['stop_tokens'])}",
        f"  loaded in {info['load_seconds']:.1f} s{' (cached conversion)' if info['from_cache'] else ''}",
    ]
    lines += [f"  note: {n}" for n in info["notes"]]
    return "\n".join(lines)

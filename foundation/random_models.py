"""`random:<name>`: the exact architecture of a published Gemma with seeded random weights.

For measuring what size does to time and memory (export, quantize, check) without the real
weights, which this machine cannot download. The name says "random" so nobody mistakes it
for the real model; parity is still checked against torch on it, in fp32. The configs are
the published config.json values of each model's text decoder; the tokenizer is the real
Gemma 3 tokenizer of the built-in 270M (the same 262,144-token vocabulary).
"""

from __future__ import annotations

from types import MappingProxyType

from foundation.errors import SourceError

_GEMMA3_COMMON = {
    "model_type": "gemma3_text", "head_dim": 256, "query_pre_attn_scalar": 256,
    "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh", "sliding_window_pattern": 6,
    "attn_logit_softcapping": None, "final_logit_softcapping": None,
    "initializer_range": 0.02, "tie_word_embeddings": True,
    "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
}

# google/gemma-3-1b-pt and the text_config of google/gemma-3-4b-pt, as published
RANDOM_MODELS = MappingProxyType({
    "gemma3-1b": {**_GEMMA3_COMMON, "hidden_size": 1152, "intermediate_size": 6912,
                  "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1,
                  "sliding_window": 512, "max_position_embeddings": 32768,
                  "vocab_size": 262144},
    "gemma3-4b": {**_GEMMA3_COMMON, "hidden_size": 2560, "intermediate_size": 10240,
                  "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
                  "sliding_window": 1024, "max_position_embeddings": 131072,
                  "vocab_size": 262208,
                  "rope_scaling": {"rope_type": "linear", "factor": 8.0}},
})
SEED = 0


def random_name(spec: str) -> str:
    name = spec.split(":", 1)[1]
    if name not in RANDOM_MODELS:
        raise SourceError(f"unknown random-weight model '{name}'",
                          "use one of: " + ", ".join(f"random:{n}" for n in RANDOM_MODELS))
    return name


def random_identity(spec: str) -> str:
    """What artifacts record as the source's sha256: config + seed + recipe version."""
    import hashlib
    import json

    name = random_name(spec)
    payload = {"random": name, "config": RANDOM_MODELS[name], "seed": SEED, "v": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def build_random(spec: str, tokenizer_dir):
    """(model, tokenizer): the architecture with seeded weights, fp32, eval; the tokenizer
    from `tokenizer_dir` (the built-in 270M's converted checkpoint)."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    name = random_name(spec)
    config = {k: v for k, v in RANDOM_MODELS[name].items() if k != "model_type"}
    config = Gemma3TextConfig(**config)  # layer_types: every 6th layer full attention
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(SEED)
    model = Gemma3ForCausalLM(config).eval()
    return model, tokenizer

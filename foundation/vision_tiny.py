"""Tiny random-weight vision-language Gemma models for tests: seeded, built in well under a second.

The tokenizer is the text families' byte-level one plus the family's image tokens; the
config is the family's tiny nested config (text + SigLIP vision) with those tokens' ids.
"""

from __future__ import annotations

from foundation.families import Family
from foundation.tiny import SPECIAL_TOKENS, TINY_SEED, tiny_tokenizer


def image_tokens(family: Family) -> list[str]:
    vision = family.vision
    return [t for t in (vision.get("boi"), vision.get("eoi"), vision["image_token"]) if t]


def tiny_vision_tokenizer(family: Family):
    tokenizer = tiny_tokenizer(family)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<start_of_turn>", "<end_of_turn>", *image_tokens(family)]})
    return tokenizer


def tiny_vision_config(family: Family, tokenizer):
    import transformers

    vocab = tokenizer.get_vocab()
    tiny = {k: dict(v) if isinstance(v, dict) else v for k, v in family.tiny_config.items()}
    special = {"vocab_size": len(tokenizer), "pad_token_id": 0, "bos_token_id": 2,
               "eos_token_id": [1, SPECIAL_TOKENS.index("<end_of_turn>")]}
    tiny["text_config"].update(special)
    extra = {"image_token_index": vocab[family.vision["image_token"]]}
    if family.vision.get("boi"):
        extra.update(boi_token_index=vocab[family.vision["boi"]],
                     eoi_token_index=vocab[family.vision["eoi"]])
    if family.vision.get("classifier"):  # ShieldGemma 2: "Y" and "N" stand in for Yes and No
        extra.update(yes_token_index=vocab["Y"], no_token_index=vocab["N"])
    if "vocab_size" in getattr(transformers, family.config_class).__dataclass_fields__:
        extra["vocab_size"] = len(tokenizer)
    return getattr(transformers, family.config_class)(**tiny, **extra)


def build_tiny_vision(family: Family):
    """(model, tokenizer) with seeded random weights, fp32, eval mode."""
    import torch
    import transformers

    tokenizer = tiny_vision_tokenizer(family)
    config = tiny_vision_config(family, tokenizer)
    config._attn_implementation = "eager"
    for sub in ("text_config", "vision_config"):
        getattr(config, sub)._attn_implementation = "eager"
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        model = getattr(transformers, family.causal_lm_class)(config)
        # random init leaves Gemma 3's projector weight at zero: give the image a real path
        for name, param in model.named_parameters():
            if name.endswith("mm_input_projection_weight"):
                torch.nn.init.normal_(param, std=0.1)
    finally:
        torch.random.set_rng_state(state)
    return model.float().eval(), tokenizer

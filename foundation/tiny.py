"""Tiny random-weight Gemma models for tests: seeded, built in well under a second.

The tokenizer is byte-level (every UTF-8 byte is a token) plus Gemma's special
tokens, so any text round-trips and nothing has to be downloaded.
"""

from __future__ import annotations

import hashlib
import json

from foundation.families import Family

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
TINY_SEED = 0


def tiny_tokenizer(family: Family):
    """A byte-level PreTrainedTokenizerFast with Gemma's special tokens at Gemma's ids 0-3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(byte_chars)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        chat_template=family.chat_template,
    )


def tiny_config(family: Family, vocab_size: int):
    """The family's tiny transformers config, with Gemma's special-token ids."""
    import transformers

    config_cls = getattr(transformers, family.config_class)
    return config_cls(
        vocab_size=vocab_size,
        pad_token_id=0,
        eos_token_id=[1, SPECIAL_TOKENS.index("<end_of_turn>")],
        bos_token_id=2,
        **dict(family.tiny_config),
    )


def tiny_identity(family: Family) -> str:
    """A stable hash of what defines the tiny model (config and seed), for manifests."""
    blob = json.dumps({"family": family.name, "config": dict(family.tiny_config), "seed": TINY_SEED},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_tiny(family: Family):
    """(model, tokenizer) with seeded random weights, fp32, eval mode."""
    import torch
    import transformers

    tokenizer = tiny_tokenizer(family)
    config = tiny_config(family, vocab_size=len(tokenizer))
    config._attn_implementation = "eager"
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        model = getattr(transformers, family.causal_lm_class)(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.float().eval(), tokenizer

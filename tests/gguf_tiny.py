"""Write a real GGUF file of a tiny Gemma 3 model, the way llama.cpp's converter lays it out.

Used by the source tests: a GGUF written here must load back through gemma-edge to
the same logits as the model it was written from.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
PIECES = ["\u2581"] + list(string.ascii_letters + string.digits + ".,;:!?'\"-()") + [
    "\u2581the", "\u2581a", "th", "he", "in", "er", "an"]


def tiny_gemma3_config():
    """6 layers so the default Gemma 3 5:1 sliding pattern applies (GGUF carries no layer list)."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=len(SPECIALS) + 256 + len(PIECES), hidden_size=64, intermediate_size=128,
        num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=512, sliding_window=6, initializer_range=0.1,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, rms_norm_eps=1e-6,
    )


def write_tiny_gguf(path: Path, *, name: str = "Tiny Gemma 3", seed: int = 0):
    """Write a tiny Gemma 3 GGUF (F32 tensors); returns the torch model it was written from."""
    import gguf
    import torch
    from transformers import Gemma3ForCausalLM

    config = tiny_gemma3_config()
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).eval()
    # Norm weights are zero-centred in HF (x * (1 + w)); give them values to carry.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.normal_(0, 0.1)

    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["full_attention"]["rope_theta"])
    writer.add_sliding_window(config.sliding_window)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + PIECES
    types = ([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.UNKNOWN]
             + [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.BYTE] * 256
             + [gguf.TokenType.NORMAL] * len(PIECES))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":
            continue  # tied to token_embd
        stem = hf_name.removesuffix(".weight")
        data = tensor.detach().float().numpy()
        if stem.endswith("norm"):
            data = data + 1.0  # llama.cpp stores Gemma norms as (1 + w)
        writer.add_tensor(names.get_name(stem) + ".weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model

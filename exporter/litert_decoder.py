"""The LiteRT layout of the cache-explicit decoder: fixed-capacity KV cache, in place.

LiteRT (and the LiteRT-LM engine) run fixed shapes: one `decode` signature (1 token)
and `prefill_<T>` signatures, sharing weights. The cache is `kv_cache_k_{i}` /
`kv_cache_v_{i}`; new entries go in at `input_pos` with tfl.dynamic_update_slice, and the
updated caches are outputs. K is [1, kv_heads, C, head_dim] and V is stored transposed,
[1, kv_heads, head_dim, C] (export_hf's layout): both attention matmuls then read the cache
along its contiguous axis as BATCH_MATMUL's transposed operand, which XNNPACK runs without
repacking a strided [C, head_dim] V at every step. `mask` [1, 1, T, C] is
the additive causal mask the runtime supplies (0 where key slot j <= input_pos[i]);
sliding-window layers narrow it inside the graph, so positions stay exact past the
window.

Optionally (`head_block`, export --head-block) the tied embedding / LM head is stored as
column parts of that many inputs: the head is a sum of one FULLY_CONNECTED per part and the
embedding a concatenation of one lookup per part, on the same tables. LiteRT's int8 has one
scale per output row of a weight, so per part that is one scale per `head_block` inputs
(ai-edge-quantizer offers blocks only for int4). Measured on the 270M (512 held-out
tokens): LiteRT int8-calibrated KLD 0.0040 -> 0.0022 (128) / 0.0018 (64), int8-dynamic
0.021 -> 0.016 (128); but LiteRT-LM decoded at 0.80-0.99x and its RSS grew 24-79 MiB
(one copy of 262k per-row scales per part, per signature), so the default is one tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from exporter.cache_decoder import CacheDecoder


def rms_norm_composite(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Gemma's RMSNorm as litert-torch's `odml.rms_norm` composite (what export_hf emits):
    one fused op in LiteRT instead of Mean, Sqrt, Div and Mul, which split the XNNPACK
    graph at every norm (6 per Gemma 3 layer)."""
    from litert_torch.generative.layers.normalization import rms_norm_with_hlfb

    return rms_norm_with_hlfb(x, 1.0 + norm.weight.float(), norm.eps, torch.ones((), dtype=x.dtype))


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q kᵀ as litert-torch's bmm_4d (BATCH_MATMUL reading K as stored): plain matmul with
    a transposed cache lowered to a FULLY_CONNECTED whose weights are the KV cache."""
    from litert_torch.generative.custom_ops.bmm_4d import bmm_4d

    return bmm_4d(q, k)


class HeadParts(nn.Module):
    """The LM head (and the embedding, when tied to it) as column parts of `block` inputs."""

    def __init__(self, decoder: CacheDecoder, block: int) -> None:
        super().__init__()
        weight = decoder.hf.lm_head.weight.detach()
        if weight.shape[1] % block:
            raise ValueError(f"head block {block} does not divide the hidden size {weight.shape[1]}")
        self.block = block
        self.tied = weight.data_ptr() == decoder.hf.model.embed_tokens.weight.data_ptr()
        self.parts = nn.ParameterList(
            nn.Parameter(weight[:, i:i + block].clone(), requires_grad=False)
            for i in range(0, weight.shape[1], block))
        self.embed_scale = decoder.embed_scale(weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = None
        for i, part in enumerate(self.parts):
            y = nn.functional.linear(x[..., i * self.block:(i + 1) * self.block], part)
            logits = y if logits is None else logits + y
        return logits

    def lookup(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = [nn.functional.embedding(input_ids, part) for part in self.parts]
        return torch.cat(rows, dim=-1) * self.embed_scale


def litert_cache_names(num_layers: int) -> list[str]:
    return [f"kv_cache_{kv}_{i}" for i in range(num_layers) for kv in ("k", "v")]


class StaticCacheDecoder(nn.Module):
    """(tokens [1,T] i32, input_pos [T] i32, mask [1,1,T,C], kv caches) -> logits + caches."""

    def __init__(self, decoder: CacheDecoder, cache_len: int, head_block: int = 0) -> None:
        super().__init__()
        self.decoder = decoder
        decoder.norm = rms_norm_composite
        decoder.scores = attention_scores
        decoder.weighted = attention_scores  # probs (V_t)ᵀ with V_t [.., head_dim, C] as stored
        if head_block:
            decoder.head = HeadParts(decoder, head_block)
            if decoder.head.tied:
                decoder.embed = decoder.head.lookup
        self.cache_len = cache_len
        self.names = litert_cache_names(decoder.num_layers)

    def sample_inputs(self, seq: int) -> dict[str, torch.Tensor]:
        return {
            "tokens": torch.zeros((1, seq), dtype=torch.int32),
            "input_pos": torch.arange(seq, dtype=torch.int32),
            "mask": torch.zeros((1, 1, seq, self.cache_len)),
            **{name: torch.zeros(self.cache_shape(name)) for name in self.names},
        }

    def cache_shape(self, name: str) -> tuple[int, ...]:
        d = self.decoder
        if name.startswith("kv_cache_v_"):
            return (1, d.num_kv_heads, d.head_dim, self.cache_len)
        return (1, d.num_kv_heads, self.cache_len, d.head_dim)

    def forward(self, tokens, input_pos, mask, **caches):
        from litert_torch.generative.custom_ops.dynamic_update_slice import (
            dynamic_update_slice,
        )

        d = self.decoder
        masks = {"full_attention": mask}
        if d.window:
            slot = torch.arange(self.cache_len, dtype=torch.int32)[None, :]
            too_old = (input_pos[:, None] - slot) >= d.window
            masks["sliding_attention"] = mask.masked_fill(too_old[None, None],
                                                          torch.finfo(torch.float32).min)
        zero = torch.zeros((1,), dtype=torch.int32)[0]
        pos = input_pos[:1][0]

        def in_place(i):
            def update(k, v):
                return (dynamic_update_slice(caches[self.names[2 * i]], k, [zero, zero, pos, zero]),
                        dynamic_update_slice(caches[self.names[2 * i + 1]], v.transpose(2, 3),
                                             [zero, zero, zero, pos]))
            return update

        logits, present = d.run_layers(tokens, input_pos[None, :], masks, in_place)
        return {"logits": logits, **dict(zip(self.names, present, strict=True))}

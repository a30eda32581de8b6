"""The ONNX layout of the cache decoder: RoPE and attention as standard ONNX (opset 23) ops.

RotaryEmbedding replaces ~6 nodes per rotated tensor (slice, neg, concat, mul, add), and
one Attention node does a layer's cache append, grouped-query scores, mask, softmax and
weighted sum, which onnxruntime runs as one kernel instead of ~20 nodes. At decode, a 270M
model's step is mostly node dispatch, so node count is speed.
Gemma 2 keeps the explicit attention: it soft-caps scores before the mask, the ONNX op after.
"""

from __future__ import annotations

import torch

from exporter.cache_decoder import CacheDecoder


class OnnxCacheDecoder(CacheDecoder):
    def __init__(self, hf_model, family) -> None:
        super().__init__(hf_model, family)
        self.rotate = rotary_embedding
        self.fused_attention = not self.attn_softcap

    def forward(self, input_ids, attention_mask, position_ids, *past):
        if not self.fused_attention:
            return super().forward(input_ids, attention_mask, position_ids, *past)
        masks = self._masks(attention_mask, position_ids)
        logits, present = self.run_layers(input_ids, position_ids, masks,
                                          lambda i: (past[2 * i], past[2 * i + 1]))
        return (logits, *present)

    def _attention(self, layer, x, cos_sin, mask, update_cache):
        if not self.fused_attention:
            return super()._attention(layer, x, cos_sin, mask, update_cache)
        past_k, past_v = update_cache  # forward() hands this layer's past, not an updater
        attn = layer.self_attn
        bsz, seq, _ = x.shape
        q, k, v = self._project(attn, x, cos_sin)
        out, k, v, _ = torch.onnx.ops.attention(q, k, v, mask, past_k, past_v, scale=self.scaling)
        out = out.transpose(1, 2).reshape(bsz, seq, -1)
        return attn.o_proj(out), k, v


def rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE (rotate-half layout) as one ONNX RotaryEmbedding: x [B, heads, S, D]; cos, sin
    [B, S, D] with both halves equal, as the model's rotary module returns them, so the
    first half is the per-position table the op takes when no position ids are given."""
    half = x.shape[-1] // 2
    return torch.onnx.ops.rotary_embedding(x, cos[..., :half], sin[..., :half])

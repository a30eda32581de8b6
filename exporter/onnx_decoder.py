"""The ONNX layout of the cache decoder: onnxruntime's fused ops, in the layout its kernels take.

Each layer's attention is one `com.microsoft.GroupQueryAttention` node (cache append,
grouped-query scores, soft-capping, causal and sliding-window masking, softmax, weighted
sum), and RoPE one standard `RotaryEmbedding` (opset 23) per rotated tensor; q, k and v
stay in the [B, S, heads * D] layout of their projections, so no transposes surround them.
GroupQueryAttention reads the cache length from `attention_mask` (seqlens_k = its sum - 1)
and masks causally itself, so the graph computes no mask tensors; the mask is therefore
all ones, batch 1 without padding, as onnxruntime-genai and our runner feed it. It also takes a past
buffer longer than the valid length: onnxruntime-genai then binds past and present to one
preallocated buffer (`past_present_share_buffer`) and no step copies the cache.
At decode, a 270M model's step is mostly node dispatch, so node count is speed.

Outside an ONNX export (eager PyTorch) the decoder runs the explicit CacheDecoder math;
tests compare the exported graph in onnxruntime against it and against Hugging Face.
"""

from __future__ import annotations

import torch

from exporter.cache_decoder import CacheDecoder

GQA_OP = "com.microsoft::GroupQueryAttention"
SKIP_NORM_OP = "com.microsoft::SkipSimplifiedLayerNormalization"


class OnnxCacheDecoder(CacheDecoder):
    def forward(self, input_ids, attention_mask, position_ids, *past):
        if not torch.onnx.is_in_onnx_export():
            return super().forward(input_ids, attention_mask, position_ids, *past)
        # GroupQueryAttention's cache lengths: valid tokens - 1 per row, and the total length
        seqlens_k = (attention_mask.sum(1) - 1).to(torch.int32)
        total = torch.scalar_tensor(attention_mask.shape[1], dtype=torch.int32)
        # in place of mask tensors, what the op masks with itself: the cache lengths and each
        # layer type's window (-1: none)
        masking = {t: (seqlens_k, total, self.window if t == "sliding_attention" else -1)
                   for t in self.layer_types}
        logits, present = self.run_layers(input_ids, position_ids, masking,
                                          lambda i: (past[2 * i], past[2 * i + 1]))
        return (logits, *present)

    def add_norm(self, residual, x, norm):
        """One SkipSimplifiedLayerNormalization: (normed, mean, inv_std, residual + x); the
        unused statistics outputs are dropped when the graph is finished (onnx_export.py)."""
        if not torch.onnx.is_in_onnx_export():
            return super().add_norm(residual, x, norm)
        stats = [*x.shape[:-1], 1]
        normed, _mean, _inv_std, h = torch.onnx.ops.symbolic_multi_out(
            SKIP_NORM_OP, [x, residual, 1.0 + norm.weight.float()], {"epsilon": float(norm.eps)},
            dtypes=[x.dtype] * 4, shapes=[x.shape, stats, stats, x.shape], version=1)
        rotation = getattr(norm, "gemma_edge_rotation", None)  # a rotated export's (onnx_export.py)
        return h, normed if rotation is None else rotation.apply(normed)

    def _attention(self, layer, x, cos_sin, masking, update_cache):
        if not torch.onnx.is_in_onnx_export():
            return super()._attention(layer, x, cos_sin, masking, update_cache)
        seqlens_k, total_length, window = masking
        past_k, past_v = update_cache  # forward() hands this layer's past, not an updater
        attn = layer.self_attn
        bsz, seq, _ = x.shape
        cos, sin = cos_sin
        half = self.head_dim // 2
        cos, sin = cos[..., :half], sin[..., :half]  # both halves equal in the model's tables

        def project(proj, heads, norm):
            y = proj(x)
            if norm is not None:
                y = self.norm(norm, y.view(bsz, seq, heads, self.head_dim)).reshape(bsz, seq, -1)
            return y

        q = project(attn.q_proj, self.num_heads, getattr(attn, "q_norm", None))
        k = project(attn.k_proj, self.num_kv_heads, getattr(attn, "k_norm", None))
        v = attn.v_proj(x)
        q = torch.onnx.ops.rotary_embedding(q, cos, sin, num_heads=self.num_heads)
        k = torch.onnx.ops.rotary_embedding(k, cos, sin, num_heads=self.num_kv_heads)
        total = past_k.shape[2] + seq
        cache_shape = [bsz, self.num_kv_heads, total, self.head_dim]
        out, k, v = torch.onnx.ops.symbolic_multi_out(
            GQA_OP, [q, k, v, past_k, past_v, seqlens_k, total_length],
            {"num_heads": self.num_heads, "kv_num_heads": self.num_kv_heads,
             "scale": float(self.scaling), "local_window_size": int(window or -1),
             "softcap": float(self.attn_softcap or 0.0)},
            dtypes=[q.dtype, past_k.dtype, past_v.dtype],
            shapes=[[bsz, seq, self.num_heads * self.head_dim], cache_shape, cache_shape],
            version=1,
        )
        return attn.o_proj(out), k, v

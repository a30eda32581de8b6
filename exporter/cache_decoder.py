"""A Gemma decoder whose KV cache is plain per-layer tensors in and out of `forward`.

This is the graph both exporters trace. It reuses the Hugging Face model's own
submodules (projections, norms, MLP, rotary tables), so weights are shared, not
copied, and only attention, masking and the cache are written here. The cache grows
for every layer; a sliding-window layer masks keys older than its window instead of
rolling a buffer, which keeps positions exact past the window in every runtime.

Inputs  (onnxruntime-genai names): input_ids [1,S], attention_mask [1,P+S],
        position_ids [1,S], past_key_values.{i}.key/value [1,KV,P,D]
Outputs: logits [1,S,V], present.{i}.key/value [1,KV,P+S,D]
"""

from __future__ import annotations

import torch
from torch import nn

from foundation.families import Family


def cache_names(num_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return past, present


def decoder_facts(decoder: CacheDecoder) -> dict:
    """Shape facts every export manifest records, so runners need not guess."""
    return {"num_layers": decoder.num_layers, "num_kv_heads": decoder.num_kv_heads,
            "head_dim": decoder.head_dim, "num_heads": decoder.num_heads,
            "vocab_size": decoder.hf.config.vocab_size, "sliding_window": decoder.window,
            "hidden_size": decoder.hf.config.hidden_size,
            "max_position_embeddings": decoder.hf.config.max_position_embeddings,
            "layer_types": decoder.layer_types}


class CacheDecoder(nn.Module):
    """Gemma 1/2/3 text decoder: (ids, mask, positions, *past) -> (logits, *present)."""

    def __init__(self, hf_model, family: Family) -> None:
        super().__init__()
        self.hf = hf_model.eval()
        cfg = hf_model.config
        self.family = family
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        scalar = getattr(cfg, "query_pre_attn_scalar", None) or cfg.head_dim
        self.scaling = scalar**-0.5
        self.attn_softcap = getattr(cfg, "attn_logit_softcapping", None)
        self.final_softcap = getattr(cfg, "final_logit_softcapping", None)
        layer_types = getattr(cfg, "layer_types", None) or ["full_attention"] * self.num_layers
        self.layer_types = list(layer_types)
        self.window = getattr(cfg, "sliding_window", None)
        self.sandwich = family.has("sandwich_norm")
        self.per_layer_rope = family.has("per_layer_rope_theta")
        # the LiteRT layout swaps norm and scores for litert-torch's fused forms (litert_decoder.py)
        self.norm = _rms_norm  # (norm module, x) -> normalized x
        self.scores = _scores  # (q, k) -> q kᵀ
        self.weighted = torch.matmul  # (probs, V as the cache holds it) -> probs V
        self.apply_rope = _apply_rope  # (x, cos, sin) -> x rotated; ONNX swaps in its RotaryEmbedding
        # the LiteRT layout swaps both for the head's column parts (litert_decoder.HeadParts)
        self.embed = self._embed  # ids -> scaled embeddings
        self.head = hf_model.lm_head  # x -> logits (before the final soft-cap)

    def _rope(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str):
        if self.per_layer_rope:
            return self.hf.model.rotary_emb(x, position_ids, layer_type)
        return self.hf.model.rotary_emb(x, position_ids)

    def _masks(self, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> dict:
        """Additive masks [1,1,S,T]: causal (+ padding), and causal within the sliding window."""
        total = attention_mask.shape[1]
        q_pos = position_ids[0][:, None]
        k_pos = torch.arange(total, device=position_ids.device)[None, :]
        allowed = (k_pos <= q_pos) & (attention_mask[0][None, :] > 0)
        neg = torch.finfo(torch.float32).min
        masks = {"full_attention": torch.where(allowed, 0.0, neg)[None, None]}
        if self.window:
            local = allowed & (q_pos - k_pos < self.window)
            masks["sliding_attention"] = torch.where(local, 0.0, neg)[None, None]
        return masks

    def _project(self, attn, x, cos_sin):
        """q [B, heads, S, D], k and v [B, kv_heads, S, D] of the new tokens, normed and rotated."""
        bsz, seq, _ = x.shape
        q = attn.q_proj(x).view(bsz, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(bsz, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(bsz, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if hasattr(attn, "q_norm"):
            q, k = self.norm(attn.q_norm, q), self.norm(attn.k_norm, k)
        cos, sin = cos_sin
        return self.apply_rope(q, cos, sin), self.apply_rope(k, cos, sin), v

    def _attention(self, layer, x, cos_sin, mask, update_cache):
        attn = layer.self_attn
        bsz, seq, _ = x.shape
        q, k, v = self._project(attn, x, cos_sin)
        k, v = update_cache(k, v)  # -> every key/value the new tokens may attend to
        # Grouped-query attention without copying K/V per query head: fold each KV
        # head's query group into the sequence axis (head h = kv * groups + g, as
        # transformers' repeat_kv orders them).
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(bsz, self.num_kv_heads, groups * seq, self.head_dim)
        scores = self.scores(q, k) * self.scaling
        if self.attn_softcap:
            scores = torch.tanh(scores / self.attn_softcap) * self.attn_softcap
        total = k.shape[2]
        scores = scores.view(bsz, self.num_kv_heads, groups, seq, total) + mask.unsqueeze(2)
        probs = torch.softmax(scores, dim=-1).view(bsz, self.num_kv_heads, groups * seq, total)
        out = self.weighted(probs, v).view(bsz, self.num_heads, seq, self.head_dim)
        out = out.transpose(1, 2).reshape(bsz, seq, -1)
        return attn.o_proj(out), k, v

    def forward(self, input_ids, attention_mask, position_ids, *past):
        """ONNX layout: the cache grows; present = concat(past, new)."""
        masks = self._masks(attention_mask, position_ids)

        def grow(i):
            return lambda k, v: (torch.cat([past[2 * i], k], dim=2),
                                 torch.cat([past[2 * i + 1], v], dim=2))

        logits, present = self.run_layers(input_ids, position_ids, masks, grow)
        return (logits, *present)

    def run_layers(self, input_ids, position_ids, masks, cache_updater):
        """Embedding → layers → logits. cache_updater(i) gives layer i's (k, v) -> (K, V)."""
        model = self.hf.model
        h = self.embed(input_ids)
        rope = {t: self._rope(h, position_ids, t) for t in set(self.layer_types)}
        present = []
        layers = list(model.layers)
        x = self.norm(layers[0].input_layernorm, h)
        for i, layer in enumerate(layers):
            kind = self.layer_types[i]
            # each residual add is fused with the norm that reads its sum (add_norm)
            next_norm = layers[i + 1].input_layernorm if i + 1 < len(layers) else model.norm
            a, k, v = self._attention(layer, x, rope[kind], masks[kind], cache_updater(i))
            present += [k, v]
            if self.sandwich:
                h, x = self.add_norm(h, self.norm(layer.post_attention_layernorm, a),
                                     layer.pre_feedforward_layernorm)
                h, x = self.add_norm(h, self.norm(layer.post_feedforward_layernorm, layer.mlp(x)),
                                     next_norm)
            else:
                h, x = self.add_norm(h, a, layer.post_attention_layernorm)
                h, x = self.add_norm(h, layer.mlp(x), next_norm)
        logits = self.head(x)
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits, present

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        table = self.hf.model.embed_tokens.weight
        return nn.functional.embedding(input_ids, table) * self.embed_scale(table.dtype)

    def embed_scale(self, dtype: torch.dtype) -> torch.Tensor:
        """Gemma scales embeddings by sqrt(hidden) (Gemma 3's embedding module holds the
        factor; transformers' Gemma 1/2 models apply it outside)."""
        scale = getattr(self.hf.model.embed_tokens, "embed_scale", None)
        if scale is None:
            scale = torch.tensor(self.hf.config.hidden_size**0.5)
        return scale.to(dtype)

    def add_norm(self, residual, x, norm):
        """(residual + x, norm(residual + x)): the ONNX layout fuses the pair into one node."""
        h = residual + x
        return h, self.norm(norm, h)

    def empty_cache(self, past_len: int = 0) -> list[torch.Tensor]:
        shape = (1, self.num_kv_heads, past_len, self.head_dim)
        return [torch.zeros(shape) for _ in range(2 * self.num_layers)]


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.matmul(q, k.transpose(2, 3))


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Gemma's RMSNorm, x / sqrt(mean(x^2) + eps) * (1 + w), in fp32.

    Same arithmetic as transformers' Gemma*RMSNorm, spelled with Sqrt and Div so
    onnxruntime fuses it into one SimplifiedLayerNormalization kernel (the rsqrt
    spelling exports as Sqrt + Reciprocal + Mul, which it does not fuse).
    """
    variance = x.pow(2).mean(-1, keepdim=True)
    return x / torch.sqrt(variance + norm.eps) * (1.0 + norm.weight.float())


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin

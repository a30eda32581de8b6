"""RecurrentGemma (Griffin) as a pure function of its state: what the exported graphs compute.

transformers' RecurrentGemmaForCausalLM keeps its state inside the modules (conv1d_state,
rg_lru.recurrent_states, a DynamicCache); an exported graph cannot. This module reads the
same weights and takes the whole state as inputs and returns it as outputs:

  recurrent layer i: conv   [1, lru_width, conv1d_width - 1]  the last inputs of the conv
                     recurrent [1, lru_width] fp32              the RG-LRU hidden state
  attention layer i: key, value [1, kv_heads, window - 1, head_dim]  the last window - 1
                     positions, oldest first (a sliding window of fixed size, masked by
                     position, so a step costs the same at position 16 and at 100,000)

The graph resets itself at position 0 (the RG-LRU's reset; conv and window state are
ignored there), so a runner may reuse its buffers across sequences.

Prefill over S tokens is not S copies of the step: the conv is one depthwise Conv over
[state, inputs], and the linear recurrence h_t = a_t h_{t-1} + x_t runs in its parallel
form, h_t = sum_s exp(sum_{s<r<=t} log a_r) x_s + exp(sum_{r<=t} log a_r) h_0, with the
segment sums built by a masked cumulative sum (exponents are never positive, so nothing
overflows). It costs S * S * lru_width memory, so runners feed long prompts in chunks
(the state carries between them exactly).
"""

from __future__ import annotations

import torch
from torch import nn

RESET_LOG_A = -1.0e4  # log a at a reset: exp() of anything containing it is exactly 0


def state_layout(config) -> list[tuple[str, str, list[int], str]]:
    """(input name, output name, shape, kind) per state tensor, in graph order."""
    window = int(config.attention_window_size)
    width, conv = int(config.lru_width), int(config.conv1d_width)
    heads, head_dim = int(config.num_key_value_heads), int(config.head_dim)
    layout = []
    for i, kind in enumerate(config.layers_block_type):
        if kind == "linear_attention":
            layout += [(f"past_conv.{i}", f"present_conv.{i}", [1, width, conv - 1], "conv"),
                       (f"past_recurrent.{i}", f"present_recurrent.{i}", [1, width], "recurrent")]
        else:
            for part in ("key", "value"):
                layout.append((f"past_key_values.{i}.{part}", f"present.{i}.{part}",
                               [1, heads, window - 1, head_dim], part))
    return layout


class RecurrentStateDecoder(nn.Module):
    """forward(input_ids [1, S], position_ids [1, S], *state) -> (logits [1, S, V], *state')."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        cfg = model.config
        self.layer_types = list(cfg.layers_block_type)
        self.window = int(cfg.attention_window_size)
        self.heads, self.kv_heads = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
        self.head_dim = int(cfg.head_dim)
        self.cap = float(cfg.logits_soft_cap)
        # transformers multiplies by sqrt(hidden) rounded to bfloat16 (a buffer of that dtype)
        self.normalizer = float(model.model.normalizer.float())

    @property
    def num_state(self) -> int:
        return 2 * len(self.layer_types)

    def empty_state(self) -> list[torch.Tensor]:
        return [torch.zeros(shape) for _i, _o, shape, _k in state_layout(self.model.config)]

    def forward(self, input_ids, position_ids, *state):
        core = self.model.model
        positions = position_ids[0]
        first = positions[:1]  # position of the first token: 0 resets the state
        h = core.embed_tokens(input_ids).float() * self.normalizer
        out_state = []
        for i, layer in enumerate(core.layers):
            x = _rms(layer.temporal_pre_norm, h)
            a, b = state[2 * i], state[2 * i + 1]
            if self.layer_types[i] == "linear_attention":
                y, a, b = self._recurrent(layer.temporal_block, x, positions, first, a, b)
            else:
                y, a, b = self._attention(layer.temporal_block, x, positions, first, a, b)
            out_state += [a, b]
            h = y + h
            mlp = layer.mlp_block
            x = _rms(layer.channel_pre_norm, h)
            h = mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)) + h
        logits = self.model.lm_head(_rms(core.final_norm, h))
        return (torch.tanh(logits / self.cap) * self.cap, *out_state)

    def _recurrent(self, block, x, positions, first, conv_state, rec_state):
        y = block.act_fn(block.linear_y(x))
        xb = block.linear_x(x).transpose(1, 2)  # [1, lru, S]
        keep = (first != 0).to(xb.dtype)  # position 0: the conv sees zeros before the text
        joined = torch.cat([conv_state * keep, xb], dim=-1)
        conv = block.conv_1d
        xb = nn.functional.conv1d(joined, conv.weight, conv.bias, groups=conv.groups)
        new_conv = joined[:, :, joined.shape[-1] - (conv.kernel_size[0] - 1):]
        lru, new_rec = self._rg_lru(block.rg_lru, xb.transpose(1, 2), positions, rec_state)
        return block.linear_out(lru * y), new_conv, new_rec

    def _rg_lru(self, rglru, act, positions, h0):
        _b, seq, width = act.shape
        heads = rglru.num_attention_heads
        blocks = act.reshape(seq, heads, width // heads)

        def gate(weight, bias):
            res = torch.einsum("shb,hbc->shc", blocks, weight) + bias
            return torch.sigmoid(res.reshape(seq, width))

        input_gate = gate(rglru.input_gate_weight, rglru.input_gate_bias)
        a_gate = gate(rglru.recurrent_gate_weight, rglru.recurrent_gate_bias)
        log_a = -8.0 * a_gate * nn.functional.softplus(rglru.recurrent_param)  # [S, L], fp32
        reset = (positions == 0)[:, None]
        multiplier = torch.where(reset, torch.ones_like(log_a), torch.sqrt(1 - torch.exp(2 * log_a)))
        x = (act[0] * input_gate * multiplier).float()
        log_a = torch.where(reset, torch.full_like(log_a, RESET_LOG_A), log_a.float())
        # segment sums: seg[t, s] = sum of log a over (s, t]
        steps = torch.arange(seq, device=act.device)
        later = (steps[:, None] > steps[None, :])[:, :, None]  # [r, s, 1]: r > s
        seg = torch.cumsum(torch.where(later, log_a[:, None, :], torch.zeros_like(log_a[:1, None])), 0)
        causal = (steps[:, None] >= steps[None, :])[:, :, None]
        weights = torch.where(causal, torch.exp(seg), torch.zeros_like(seg))
        decay = torch.exp(torch.cumsum(log_a, 0))  # [S, L]: what is left of h_0 at t
        h = torch.einsum("tsl,sl->tl", weights, x) + decay * h0.float()
        return h[None].to(act.dtype), h[-1:].float()

    def _attention(self, attn, x, positions, first, past_k, past_v):
        bsz, seq, _ = x.shape
        q = attn.q_proj(x).view(bsz, seq, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(bsz, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(bsz, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        inv_freq = attn.rotary_emb.inv_freq.float()
        freqs = positions[:, None].float() * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        q, k = _rotate(q, emb.cos(), emb.sin()), _rotate(k, emb.cos(), emb.sin())
        ring = past_k.shape[2]  # window - 1
        keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        key_pos = torch.cat([first - ring + torch.arange(ring, device=x.device), positions])
        qp, kp = positions[:, None], key_pos[None, :]
        allowed = (kp >= 0) & (kp <= qp) & (kp > qp - self.window)
        groups = self.heads // self.kv_heads
        k_all = keys.repeat_interleave(groups, dim=1) if groups > 1 else keys
        v_all = values.repeat_interleave(groups, dim=1) if groups > 1 else values
        # einsum, not matmul(q, k.transpose): litert-torch lowers that batched matmul over
        # the repeated kv heads wrongly (measured: score errors of 3 on the tiny model)
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k_all) * attn.scaling
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.einsum("bhqk,bhkd->bhqd", probs, v_all).transpose(1, 2).reshape(bsz, seq, -1)
        total = keys.shape[2]
        return attn.o_proj(out), keys[:, :, total - ring:], values[:, :, total - ring:]


def _rms(norm, x):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * (1.0 + norm.weight.float())


def _rotate(x, cos, sin):
    """RoPE on the first len(cos) dims of each head (partial rotary: half of head_dim)."""
    dim = cos.shape[-1]
    rot, rest = x[..., :dim], x[..., dim:]
    half = dim // 2
    turned = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    return torch.cat([rot * cos + turned * sin, rest], dim=-1)

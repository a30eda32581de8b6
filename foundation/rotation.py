"""Orthogonal rotations of the weights' input spaces, so per-row int8 quantizes them well.

LiteRT's int8 has one scale per output row of a weight, and its dynamic int8 quantizes
each activation row with one scale. Gemma's activations have outlier channels (RMS 16x
the median at the head's input), which set both ranges. Rotating a Linear's input space
by an orthogonal R (W x = (W R)(Rᵀ x), QuaRot / QuIP's incoherence idea) spreads every
outlier over all channels of the weight rows and the activations, and changes nothing in
float. Fake-quantized on the 270M (512 held-out tokens, per-row RTN int8): weight-only
KLD 0.0058 -> 0.0020, with dynamic int8 activations 0.0235 -> 0.0034; the tied head
alone 0.0030 / 94.4 % top-1 -> 0.0004 / 99.4 %.

Where the rotations go (`rotated_copy`, on a copy of the model):
- the inputs of q/k/v, gate/up and the LM head are norm outputs: one shared R of the
  hidden size, applied right after those norms as two small products (R = Q ⊗ H, for the
  270M's 640 a 128 x 128 FULLY_CONNECTED and a 5 x 5 BATCH_MATMUL, see Kron);
- the tied embedding table is stored as W R too; its lookups are rotated back (x Rᵀ);
- o_proj's input is the attention output: a per-head R_d folded into v_proj's rows and
  o_proj's columns, free at run time (the V cache holds rotated values);
- down_proj's input (gelu(gate) * up) is rotated in blocks of `block` channels (a dense
  R of the intermediate size would cost more than down_proj itself); measured: block 256
  is as good as the full rotation, block 128 lost 1 point of top-1. The block's R is a
  signed Hadamard matrix: the signs go into up_proj's rows, H_256 = H_16 ⊗ H_16 runs as
  two 16-wide products.

R is a Kronecker product of a Hadamard matrix (the largest power-of-two factor, random
signs) and a random orthogonal matrix (the rest), seeded, so an export and the quantizer
that reads it rebuild the same matrices from the manifest's `{"seed", "block"}`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

DEFAULT_BLOCK = 256


@dataclass
class Kron:
    """R = kron(a, b), applied as two small products: x R = vec(aᵀ X b) for X = x as
    [len(a), len(b)] (a None: identity, i.e. block-diagonal b). A dense R of the hidden
    size read 37 x 1.6 MB of float weights per decode step (+15 % LiteRT decode); these
    factors are 64 KB and 100 B. X b is a FULLY_CONNECTED; aᵀ (X b) one BATCH_MATMUL with
    a constant left operand (as transpose, FULLY_CONNECTED, transpose it was 112 more ops
    per decode step of the 270M; the measured cost: docs/quantization.md, rotated weights)."""

    a: torch.Tensor | None
    b: torch.Tensor

    def dense(self) -> torch.Tensor:
        return torch.kron(torch.eye(1) if self.a is None else self.a, self.b)

    def transposed(self) -> Kron:
        return Kron(None if self.a is None else self.a.T.contiguous(), self.b.T.contiguous())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x R along x's last axis (any size that is a multiple of R's: blockwise)."""
        shape, nb = x.shape, self.b.shape[0]
        # rank 3 throughout: the converter lowers rank-4 FULLY_CONNECTEDs to an invalid
        # tfl.batch_matmul
        na = 1 if self.a is None else self.a.shape[0]
        y = nn.functional.linear(x.reshape(-1, na, nb), self.b.T.contiguous())
        if self.a is not None:
            y = torch.matmul(self.a.T.contiguous(), y)
        return y.reshape(shape)

    def weights(self) -> list[np.ndarray]:
        """The constants `apply` puts in a graph: aᵀ (a BATCH_MATMUL's) and bᵀ (a
        FULLY_CONNECTED's)."""
        return [m.T.contiguous().numpy() for m in (self.a, self.b) if m is not None and m.shape[0] > 1]


@dataclass
class Rotation:
    seed: int
    block: int  # down_proj's input block
    hidden: Kron  # R of the hidden size
    head_dim: torch.Tensor  # R_d, folded into v_proj / o_proj
    down: Kron  # Hadamard of `block` as two Sylvester factors, applied blockwise
    down_signs: torch.Tensor  # [block] random signs of down's R, folded into up_proj's rows
    tied: bool

    def spec(self) -> dict:
        return {"seed": self.seed, "block": self.block}

    def matrices(self) -> list[np.ndarray]:
        """The float constants the graph multiplies by (the rotations' FULLY_CONNECTED
        weights and BATCH_MATMUL operands): the quantizer leaves these in float."""
        kron = [self.hidden, self.down] + ([self.hidden.transposed()] if self.tied else [])
        return [w for k in kron for w in k.weights()]


def hadamard(p: int) -> np.ndarray:
    """Sylvester's p x p Hadamard matrix (p a power of two), orthonormal."""
    h = np.ones((1, 1))
    while h.shape[0] < p:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(p)


def orthogonal(n: int, rng: np.random.Generator) -> Kron:
    """n x n orthogonal: a random orthogonal matrix of n / p ⊗ Hadamard (p the largest
    power-of-two factor of n, random signs)."""
    p = n & -n
    h = hadamard(p) * rng.choice([-1.0, 1.0], size=p)
    q, r = np.linalg.qr(rng.standard_normal((n // p, n // p)))
    q = q * np.sign(np.diag(r))
    return Kron(torch.from_numpy(q).float() if n // p > 1 else None, torch.from_numpy(h).float())


def down_block(intermediate: int, block: int = DEFAULT_BLOCK) -> int:
    """The largest divisor of the MLP width that is at most `block` and a power of two."""
    b = intermediate & -intermediate
    return min(b, block)


def make_rotation(hf_model, seed: int = 0, block: int = DEFAULT_BLOCK) -> Rotation:
    cfg = hf_model.config
    rng = np.random.default_rng(seed)
    tied = hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    b = down_block(cfg.intermediate_size, block)
    hidden, head_dim = (orthogonal(n, rng) for n in (cfg.hidden_size, cfg.head_dim))
    # down: Sylvester's H_b = H_p ⊗ H_(b/p), two products of ~sqrt(b) inputs instead of one
    # of b (a 256 x 256 float block cost LiteRT prefill 13 %); its random signs are a
    # diagonal in front, which up_proj's rows absorb
    p = 2 ** (int(np.log2(b)) // 2)
    down = Kron(torch.from_numpy(hadamard(p)).float() if p > 1 else None,
                torch.from_numpy(hadamard(b // p)).float())
    signs = torch.from_numpy(rng.choice([-1.0, 1.0], size=b)).float()
    return Rotation(seed, b, hidden, head_dim.dense(), down, signs, tied)


def feeding_norms(hf_model) -> list[nn.Module]:
    """The norms whose outputs are Linear inputs: each layer's pre-attention and pre-MLP
    norm (Gemma 1: post_attention_layernorm; Gemma 2/3: pre_feedforward_layernorm), and the
    final norm before the head."""
    norms = []
    for layer in hf_model.model.layers:
        pre_mlp = getattr(layer, "pre_feedforward_layernorm", None) or layer.post_attention_layernorm
        norms += [layer.input_layernorm, pre_mlp]
    return norms + [hf_model.model.norm]


def rotated_copy(hf_model, seed: int = 0, block: int = DEFAULT_BLOCK, *, in_place: bool = False):
    """(a rotated deep copy of `hf_model`, its Rotation): the same function in float; the
    copy's forward applies the rotations through hooks, and `apply_to_decoder` makes a
    CacheDecoder over it apply them too. in_place: rotate `hf_model` itself (its last user
    only: a 1B's copy is 4 GB)."""
    rot = make_rotation(hf_model, seed, block)
    model = (hf_model if in_place else copy.deepcopy(hf_model)).eval()
    cfg = model.config
    rh, rd = rot.hidden.dense(), rot.head_dim
    with torch.no_grad():
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
                lin.weight.copy_(lin.weight @ rh)
            signs = rot.down_signs.repeat(cfg.intermediate_size // rot.block)
            mlp.up_proj.weight.mul_(signs[:, None])  # down's input is gelu(gate) * up
            kv = cfg.num_key_value_heads
            v = attn.v_proj.weight.view(kv, cfg.head_dim, -1)
            attn.v_proj.weight.copy_((rd.T @ v).reshape(attn.v_proj.weight.shape))
            o = attn.o_proj.weight.view(attn.o_proj.weight.shape[0], -1, cfg.head_dim)
            attn.o_proj.weight.copy_((o @ rd).reshape(attn.o_proj.weight.shape))
            down = mlp.down_proj.weight
            down.copy_(rot.down.apply(down * signs))
            mlp.down_proj.register_forward_pre_hook(lambda _m, a: (rot.down.apply(a[0]),))
        # tied: the embedding table too; an untied embedding feeds the residual stream, not
        # a Linear, and stays as it is
        model.lm_head.weight.copy_(model.lm_head.weight @ rh)
    back = rot.hidden.transposed()
    for norm in feeding_norms(model):
        norm.gemma_edge_rotation = rot.hidden
        norm.register_forward_hook(lambda _m, _a, out: rot.hidden.apply(out))
    if rot.tied:
        model.model.embed_tokens.register_forward_hook(lambda _m, _a, out: back.apply(out))
    model.gemma_edge_rotation = rot
    return model, rot


def apply_to_decoder(decoder) -> None:
    """Make a CacheDecoder (over a `rotated_copy`) apply the rotations its own code paths
    bypass: its norms and embedding do not call the modules' forward (the down_proj hook
    fires: the decoder calls layer.mlp)."""
    rot = getattr(decoder.hf, "gemma_edge_rotation", None)
    if rot is None:
        return
    base_norm, base_embed = decoder.norm, decoder.embed

    def norm(module, x):
        y = base_norm(module, x)
        r = getattr(module, "gemma_edge_rotation", None)
        return y if r is None else r.apply(y)

    decoder.norm = norm
    if rot.tied:
        back = rot.hidden.transposed()
        decoder.embed = lambda ids: back.apply(base_embed(ids))


def rotated_reference(ref, spec: dict):
    """`ref` with its model replaced by the rotated copy an export with this rotation spec
    holds (the quantizer decides codes on the rotated weights, calibrated on the rotated
    activations). Built once per loaded model and spec; in place when `ref.disposable` (a
    4B's copy is 15.5 GB)."""
    import dataclasses

    def build():
        model, rot = rotated_copy(ref.model, int(spec["seed"]), int(spec["block"]),
                                  in_place=ref.disposable)
        # calibration statistics already collected on the unrotated model carry over:
        # the input x R of a rotated Linear has the Hessian Rᵀ H R (saves a calibration pass)
        # (entries are quantization.weights.Calibration: hessians, and factors derived from them)
        calibration = {key: dataclasses.replace(stats, factors={}, hessians=rotate_hessians(
                           stats.hessians, rot, model.config))
                       for key, stats in ref.memo.get("calibration", {}).items()}
        return dataclasses.replace(ref, model=model, memo={"calibration": calibration})

    return ref.memoized("rotated", (int(spec["seed"]), int(spec["block"])), build)


def input_rotation(name: str, rot: Rotation, cfg) -> tuple[torch.Tensor, int]:
    """How the rotated model turns Linear `name`'s input: R = block_diag(block, ..., block),
    (block, count)."""
    if name.endswith("o_proj"):
        return rot.head_dim, cfg.num_attention_heads
    if name.endswith("down_proj"):
        return torch.diag(rot.down_signs) @ rot.down.dense(), cfg.intermediate_size // rot.block
    return rot.hidden.dense(), 1  # q/k/v, gate/up, the head: norm outputs


def rotate_hessians(hessians: dict[str, np.ndarray], rot: Rotation, cfg) -> dict[str, np.ndarray]:
    """Rᵀ H R per Linear, block by block (block-diagonal R: 8x fewer flops for down_proj
    than a dense product); arrays shared between Linears (q/k/v, gate/up) stay shared."""
    done: dict[int, np.ndarray] = {}
    out = {}
    for name, h in hessians.items():
        if id(h) not in done:
            block, count = input_rotation(name, rot, cfg)
            b = block.double().numpy()
            n = b.shape[0]
            left = np.matmul(b.T, h.reshape(count, n, count * n))  # Rᵀ H, one block row at a time
            done[id(h)] = np.matmul(left.reshape(count * n, count, n), b).reshape(h.shape)
        out[name] = done[id(h)]
    return out

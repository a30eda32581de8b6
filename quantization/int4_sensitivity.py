"""Which weights lose the most at 4 bits, measured: the sensitivity that mixed precision spends
a size budget on (not names).

A weight group is what one runtime op reads: per decoder layer q/k/v (one packed
MatMulNBits), o_proj, gate/up (one), down_proj; and the head (the tied embedding). Its
sensitivity is the mean KL divergence of the model's next-token distribution from the
float model's when only that group is rounded to the low grid (round to nearest, in
torch, on calibration text, never on the held-out text a check scores). Groups are then
promoted to the high grid in order of KLD saved per byte added, while the whole model
stays within the byte budget (`pick`).

On a rotated export (foundation/rotation.py) pass the rotated reference: the grid is
applied to the weights the export holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantization.grid import Grid, dequantize, packed_bytes, quantize_rtn
from quantization.recipes import HEAD


@dataclass
class Group:
    label: str  # e.g. "layer 3 down_proj", "head"
    names: list[str]  # the Linears it holds
    kld: float = 0.0  # mean KLD with only this group on the low grid
    params: int = 0


def weight_groups(model) -> list[Group]:
    """The groups of a Gemma decoder, in model order, the head last."""
    out = []
    for i in range(len(model.model.layers)):
        base = f"model.layers.{i}"
        parts = {"q/k/v": [f"{base}.self_attn.{p}_proj" for p in "qkv"],
                 "o_proj": [f"{base}.self_attn.o_proj"],
                 "gate/up": [f"{base}.mlp.gate_proj", f"{base}.mlp.up_proj"],
                 "down_proj": [f"{base}.mlp.down_proj"]}
        out += [Group(f"layer {i} {k}", v) for k, v in parts.items()]
    return out + [Group("head", [HEAD])]


def mean_kld(model, ids: list[int], base_logp) -> float:
    """Mean KL(base || model) over the positions of one forward pass of `ids`."""
    import torch

    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return float((base_logp.exp() * (base_logp - logp)).sum(-1).mean())


def fake_quantize(model, names: list[str], grid: Grid) -> dict:
    """Round `names`' weights to `grid` in place (round to nearest); returns the originals."""
    import torch

    modules = dict(model.named_modules())
    saved = {}
    with torch.no_grad():
        for name in names:
            w = modules[name].weight
            saved[name] = w.detach().clone()
            codes, scales = quantize_rtn(w.detach().float().numpy(), grid)
            w.copy_(torch.from_numpy(dequantize(codes, scales)))
    return saved


def restore(model, saved: dict) -> None:
    import torch

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, w in saved.items():
            modules[name].weight.copy_(w)


def measure(model, ids: list[int], low: Grid, groups: list[Group] | None = None) -> list[Group]:
    """Each group's KLD with only it on `low` (the rest float)."""
    import torch

    groups = groups or weight_groups(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        base = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    for group in groups:
        group.params = sum(modules[n].weight.numel() for n in group.names)
        saved = fake_quantize(model, group.names, low)
        group.kld = mean_kld(model, ids, base)
        restore(model, saved)
    return groups


def group_bytes(model, group: Group, grid: Grid) -> int:
    modules = dict(model.named_modules())
    return sum(packed_bytes(tuple(modules[n].weight.shape), grid) for n in group.names)


def pick(model, groups: list[Group], grids: dict[str, tuple[Grid, Grid]], budget: int) -> list[Group]:
    """Groups to promote from low to high grid, by KLD per added byte, within `budget` bytes
    for all groups. grids: group label (or "body" / "head") -> (low, high)."""
    def pair(g):
        return grids.get(g.label) or grids["head" if g.label == "head" else "body"]

    total = sum(group_bytes(model, g, pair(g)[0]) for g in groups)
    extra = {g.label: group_bytes(model, g, pair(g)[1]) - group_bytes(model, g, pair(g)[0])
             for g in groups}
    chosen = []
    for g in sorted(groups, key=lambda g: -g.kld / max(extra[g.label], 1)):
        if total + extra[g.label] <= budget:
            chosen.append(g)
            total += extra[g.label]
    return chosen


def summed_kld(groups: list[Group]) -> float:
    """The first-order estimate of all groups' KLD together (errors add when small)."""
    return float(np.sum([g.kld for g in groups]))

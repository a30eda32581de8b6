"""Where LiteRT int8-dynamic's run-time activation quantization error comes from.

LiteRT's `int8-dynamic` artifact quantizes every FULLY_CONNECTED's input to int8 per token
at run time (XNNPACK qd8: asymmetric, one scale and zero point per row from the row's
min/max, the range widened to include 0). This fake-quantizes those inputs in PyTorch on the
rotated model the export holds (foundation/rotation.py, weights kept fp32, so only the
activation error is measured), for chosen subsets of the Linears (q/k/v/o, gate/up/down per
layer, the tied LM head), and reports the mean KLD / top-1 agreement against the fp32
reference over one teacher-forced held-out text (512 tokens).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/int8_dynamic_sensitivity.py [--json OUT] [--resume]
        [--per-fc]

Runs: all FCs + head; head only; body only; each type alone; each layer alone; optionally
(--per-fc, 126 more forwards) every single FC alone; the body with the most sensitive FCs
left float for <= 5 % / 10 % of the body's weight bytes, FCs ranked by the product of their
type's and their layer's KLD (absolute, and per weight byte), plus whole types left float.
Results go to --json after every run; --resume skips the runs already in it. One forward of
512 tokens with the 262k-vocab head takes 5-20 s on 2 busy cores (~30 runs: ~5-10 min).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXT = "builtin:gemma_edge_field_notes+austen_pride_and_prejudice_ch1"
TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def qd8(x: torch.Tensor) -> torch.Tensor:
    """XNNPACK's xnn_f32_qd8_asymmetric_quantization_params + convert, per row, dequantized."""
    rmin = x.amin(-1, keepdim=True).clamp(max=0.0)
    rmax = x.amax(-1, keepdim=True).clamp(min=0.0)
    same = rmin == rmax
    inv = torch.where(same, torch.ones_like(rmin), 255.0 / torch.where(same, torch.ones_like(rmin), rmax - rmin))
    from_min, from_max = -128.0 + rmin * inv, 127.0 + rmax * inv
    zp = torch.where(from_min + from_max > 0, -128.0 - rmin * inv, 127.0 - rmax * inv)
    zp = torch.round(zp.clamp(-128.0, 127.0))
    q = torch.clamp(torch.round(x * inv) + zp, -128.0, 127.0)
    return (q - zp) / inv


class FakeQuant:
    """Forward pre-hooks on every FC; the ones whose names are in `active` get qd8 inputs."""

    def __init__(self, model):
        self.active: set[str] = set()
        self.modules: dict[str, torch.nn.Linear] = {}
        for i, layer in enumerate(model.model.layers):
            for t in TYPES:
                owner = layer.self_attn if t in TYPES[:4] else layer.mlp
                self.modules[f"{i}.{t}"] = getattr(owner, t)
        self.modules["head"] = model.lm_head
        for name, mod in self.modules.items():
            # registered after rotated_copy's down_proj hook: quantizes the rotated input
            mod.register_forward_pre_hook(self._hook(name))

    def _hook(self, name):
        def hook(_m, args):
            if name in self.active:
                return (qd8(args[0]),) + tuple(args[1:])
            return None
        return hook

    def nbytes(self, names) -> int:  # int8 weight bytes
        return sum(self.modules[n].weight.numel() for n in names)


class Metrics:
    """mean KLD(p_ref || p_art) and top-1 agreement, float64, as runtime_check/parity.py."""

    def __init__(self, ref_logits: torch.Tensor, chunk: int = 64):
        self.chunk = chunk
        self.lp_ref = [torch.log_softmax(ref_logits[lo:lo + chunk].double(), -1)
                       for lo in range(0, ref_logits.shape[0], chunk)]
        self.top = ref_logits.argmax(-1)

    def __call__(self, logits: torch.Tensor) -> tuple[float, float]:
        kld = []
        for j, lo in enumerate(range(0, logits.shape[0], self.chunk)):
            lp = torch.log_softmax(logits[lo:lo + self.chunk].double(), -1)
            lr = self.lp_ref[j]
            kld.append((lr.exp() * (lr - lp)).sum(-1).clamp(min=0.0))
        return float(torch.cat(kld).mean()), float((logits.argmax(-1) == self.top).float().mean())


def main() -> int:
    from foundation.rotation import rotated_reference
    from foundation.sources import load_source
    from foundation.texts import load_text
    from runtime_check.parity import parity_metrics

    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", type=Path, default=Path("/tmp/b29/tflite/manifest.json"))
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--per-fc", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("/tmp/int8_dynamic_sensitivity.json"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()

    ref = load_source("builtin:gemma3-270m")
    spec = json.loads(args.manifest.read_text())["graph"]["rotation"]
    ids = ref.encode(load_text(TEXT))[: args.tokens]
    x = torch.tensor([ids])
    with torch.no_grad():
        ref_logits = ref.model(x).logits[0].float()
    rmodel = rotated_reference(ref, spec).model
    fq = FakeQuant(rmodel)

    def run(active) -> torch.Tensor:
        fq.active = set(active)
        with torch.no_grad():
            return rmodel(x).logits[0].float()

    metric = Metrics(ref_logits)
    rot0 = run([])
    print(f"rotation spec {spec}; {len(ids)} tokens; rotated fp32 vs fp32: max |dlogit| "
          f"{(rot0 - ref_logits).abs().max():.2e}, KLD/top1 {metric(rot0)}", flush=True)
    n_layers = len(rmodel.model.layers)
    body = [n for n in fq.modules if n != "head"]
    body_bytes = fq.nbytes(body)
    print(f"body FC weights {body_bytes / 1e6:.1f} M, head {fq.nbytes(['head']) / 1e6:.1f} M", flush=True)
    results: dict[str, dict] = {}
    if args.resume and args.json.is_file():
        results = json.loads(args.json.read_text())

    def record(label, active, full=False):
        if label in results:
            r = results[label]
            print(f"{label:34s} KLD {r['kld']:.6f}  top-1 {100 * r['top1']:6.2f} %  (resumed)", flush=True)
            return r["kld"]
        t = time.time()
        logits = run(active)
        if full:  # the project's own metric, as a cross-check of Metrics
            m = parity_metrics(ref_logits.numpy(), logits.numpy(), ids)
            kld, top1 = m["kld_mean"], m["top1_agreement"]
        else:
            kld, top1 = metric(logits)
        results[label] = {"kld": kld, "top1": top1, "n": len(active), "bytes": fq.nbytes(active)}
        print(f"{label:34s} KLD {kld:.6f}  top-1 {100 * top1:6.2f} %  ({time.time() - t:.1f} s)", flush=True)
        args.json.write_text(json.dumps(results, indent=1))
        return kld

    record("(1) all FCs + head", body + ["head"])
    record("(2) head only", ["head"])
    record("(3) body only", body)
    for t in TYPES:
        record(f"(4) type {t}", [f"{i}.{t}" for i in range(n_layers)])
    for i in range(n_layers):
        record(f"(5) layer {i}", [f"{i}.{t}" for t in TYPES])

    # ranking of single FCs: the brief's proxy (type KLD x layer KLD) and, unless skipped,
    # each FC quantized alone
    tk = {t: results[f"(4) type {t}"]["kld"] for t in TYPES}
    lk = {i: results[f"(5) layer {i}"]["kld"] for i in range(n_layers)}
    proxy = {f"{i}.{t}": tk[t] * lk[i] for i in range(n_layers) for t in TYPES}
    rankings = {"proxy": proxy, "proxy/byte": {n: proxy[n] / fq.nbytes([n]) for n in body}}
    if args.per_fc:
        single = {}
        t = time.time()
        for n in body:
            single[n] = metric(run([n]))[0]
        print(f"per-FC sweep: {len(body)} runs, {time.time() - t:.0f} s", flush=True)
        top = sorted(single, key=single.get, reverse=True)
        print("most sensitive single FCs (KLD alone, % body bytes): " + ", ".join(
            f"{n} {single[n]:.5f} ({100 * fq.nbytes([n]) / body_bytes:.1f})" for n in top[:15]), flush=True)
        results["single"] = single
        rankings["single"] = single
        rankings["single/byte"] = {n: single[n] / fq.nbytes([n]) for n in body}

    for rank_name, score in rankings.items():
        order = sorted(body, key=score.get, reverse=True)
        for budget in (0.05, 0.10):
            keep, used = [], 0
            for n in order:  # greedy: the most sensitive that still fits the budget
                b = fq.nbytes([n])
                if used + b <= budget * body_bytes:
                    keep.append(n)
                    used += b
            label = f"(6) body, {int(budget * 100)}% float [{rank_name}]"
            record(label, [n for n in body if n not in keep])
            results[label]["kept_float"] = keep
            results[label]["kept_fraction"] = used / body_bytes
            print(f"    kept float ({100 * used / body_bytes:.1f} % body bytes): {', '.join(keep)}", flush=True)
            record(label.replace("(6) body", "(6') all"), [n for n in body if n not in keep] + ["head"])
    for types in (("v_proj", "k_proj"), ("v_proj", "k_proj", "down_proj"), ("down_proj",)):
        keep = [f"{i}.{t}" for i in range(n_layers) for t in types]
        label = f"(6) body, {'+'.join(t[:-5] for t in types)} float"
        record(label, [n for n in body if n not in keep])
        results[label]["kept_fraction"] = fq.nbytes(keep) / body_bytes
        print(f"    kept float: {100 * fq.nbytes(keep) / body_bytes:.1f} % body bytes", flush=True)
        record(label.replace("(6) body", "(6') all"), [n for n in body if n not in keep] + ["head"])

    record("(1) all FCs + head [parity_metrics]", body + ["head"], full=True)
    print(f"total {time.time() - t0:.0f} s")
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Every recipe x format on one model, plus onnxruntime-genai's builder int4, in one run.

For each artifact: model file size, mean KL divergence / top-1 agreement / PPL ratio
against the fp32 torch reference over held-out text (>= 512 tokens, never calibration
text), and decode tokens/s (2 threads, warm-up + median of N). Ours run in their
runtime through our runners (onnxruntime, LiteRT interpreter); the builder's int4 runs
in onnxruntime-genai (teacher-forced one token at a time for parity).

usage: python bench/quantize_matrix.py --build build[,build2...] [--formats onnx,tflite]
       [--recipes int8,int8-calibrated,...] [--no-peer] [--redo]
(quantize time per recipe is its process's wall time divided by the recipes it made)
Needs fp32 exports in BUILD/onnx and BUILD/tflite (gemma-edge export ... --out BUILD). For
LiteRT with the head in column parts, export into another BUILD with --head-block 64 and
run --formats tflite there (the head's grid is in each row's label). Several builds (e.g.
an unrotated and a rotated export: `export --format onnx --no-rotate` / `--rotate`) are
measured in one run against one reference, each row labelled with its build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import run_measured  # bench/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
THREADS = 2
EVAL = ("gemma_edge_field_notes", "austen_pride_and_prejudice_ch1")
DECODE_STEPS = 128  # then the rest prefilled at that offset, as `gemma-edge check` does


def model_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.name.startswith("model."))


def decode_tps(runner, ids: list[int], steps: int, reps: int) -> float:
    from runtime_check.latency import median_p90

    rates = []
    for rep in range(reps + 1):
        runner.reset()
        last = getattr(runner, "prefill_last", None)
        logits = last(ids) if last else runner.prefill(ids)[-1]
        token = int(np.argmax(logits))
        start = time.perf_counter()
        for _ in range(steps):
            token = int(np.argmax(runner.decode(token)))
        if rep:
            rates.append(steps / (time.perf_counter() - start))
    return median_p90(rates)["median"]


def step_ms_side_by_side(dirs: list[Path], ids: list[int], steps: int, reps: int) -> list[float]:
    """Median decode ms per step of each artifact, the runners open at once and timed in
    turn (rep by rep), so machine load falls on all alike: what a rotation costs per step."""
    from runtime_check.open_runner import open_runner

    runners = [open_runner(d, threads=THREADS) for d in dirs]
    times: list[list[float]] = [[] for _ in dirs]
    for rep in range(reps + 1):
        for runner, got in zip(runners, times, strict=True):
            runner.reset()
            token = int(np.argmax(runner.prefill(ids)[-1]))
            start = time.perf_counter()
            for _ in range(steps):
                token = int(np.argmax(runner.decode(token)))
            if rep:
                got.append(1000 * (time.perf_counter() - start) / steps)
    for runner in runners:
        runner.close()
    return [float(np.median(t)) for t in times]


def levers(ref, ids: list[int], spec: dict | None, budget_mib: float) -> list[dict]:
    """Fake-quantized in torch (round to nearest, float activations; the exported recipes
    round with GPTQ and quantize activations in the kernel): what each grid choice and a
    sensitivity-picked mixed precision do, on the held-out ids, the rotated model if `spec`."""
    import torch

    from foundation.rotation import rotated_reference
    from quantization import int4_sensitivity as sens
    from quantization.calibration import calibration_batches
    from quantization.grid import grid_for
    from runtime_check.parity import parity_metrics

    model = rotated_reference(ref, spec).model if spec else ref.model
    groups = sens.weight_groups(model)
    with torch.no_grad():
        base = model(torch.tensor([ids])).logits[0].float().numpy()
    extra = sum(p.numel() * 4 for n, p in model.named_parameters() if p.ndim == 1)

    def run(label: str, grids: dict[str, object]) -> dict:
        saved = {}
        for g in groups:
            saved |= sens.fake_quantize(model, g.names, grids.get(g.label) or grids[
                "head" if g.label == "head" else "body"])
        with torch.no_grad():
            got = model(torch.tensor([ids])).logits[0].float().numpy()
        sens.restore(model, saved)
        size = extra + sum(sens.group_bytes(model, g, grids.get(g.label) or grids[
            "head" if g.label == "head" else "body"]) for g in groups)
        m = parity_metrics(base, got, ids)
        row = {"lever": label + (" (rotated)" if spec else ""), "mib": size / 2**20,
               "kld_mean": m["kld_mean"], "top1": m["top1_agreement"]}
        print(json.dumps(row), flush=True)
        return row

    g4, g4h, g8, g8b, g8h = (grid_for("onnx", b, k) for b, k in
                             ((4, 32), (4, 64), (8, 16), (8, 32), (8, 128)))
    rows = [run("body int4 b32, head int8 b128 (int4-calibrated's grid)", {"body": g4, "head": g8h}),
            run("body int4 b32, head int4 b64 (int4-all-calibrated's grid)", {"body": g4, "head": g4h}),
            run("body int8 b16, head int4 b32", {"body": g8, "head": g4}),
            run("body int8 b32, head int4 b32", {"body": g8b, "head": g4})]
    calib = calibration_batches(ref, tokens=512)[0]
    sens.measure(model, calib, g4, groups)
    ranked = sorted(groups, key=lambda g: -g.kld)
    print("most sensitive (KLD alone at int4 b32, calibration text): " + ", ".join(
        f"{g.label} {g.kld:.4f}" for g in ranked[:8]), flush=True)
    for head_low in (g4, g4h):
        grids = {"body": (g4, g8b), "head": (head_low, g8h)}
        chosen = sens.pick(model, groups, grids, int(budget_mib * 2**20) - extra)
        labels = {g.label for g in chosen}
        rows.append(run(f"int4 b32 + int8 b32 for the {len(chosen)} most sensitive groups per byte "
                        f"(head {'int8 b128' if 'head' in labels else 'int4 b' + str(head_low.block)})",
                        {"body": g4, "head": head_low,
                         **{g.label: grids["head" if g.label == "head" else "body"][1] for g in chosen}}))
        print("promoted: " + ", ".join(sorted(labels)), flush=True)
    return rows


def evaluate(runner, base: np.ndarray, ids: list[int], split: int, reps: int) -> dict:
    from runtime_check.parity import parity_metrics
    from runtime_check.runner import teacher_forced_logits

    got = teacher_forced_logits(runner, ids, split, DECODE_STEPS)
    m = parity_metrics(base, got, ids)
    return {"kld_mean": m["kld_mean"], "kld_p99": m["kld_p99"], "top1": m["top1_agreement"],
            "ppl_ratio": m["ppl_ratio"], "decode_tps": decode_tps(runner, ids[:32], 32, reps)}


def quantize(build: Path, fmt: str, recipes: list[str], redo: bool) -> dict:
    """Quantize the missing recipes of one format in one process (calibration collected once,
    as `build` does); returns per recipe the process's wall time and peak, shared."""
    todo = [r for r in recipes if redo or not (build / f"{fmt}-{r}").exists()]
    costs = {r: {"quantize_s": None, "quantize_peak_gib": None} for r in recipes}
    if todo:
        cmd = [sys.executable, "-m", "gemma_edge.cli", "quantize", str(build / fmt), "--recipe",
               ",".join(todo), "--overwrite", "-q"]
        wall, peak = run_measured(cmd, cwd=str(HERE.parent), log_path=str(build / f".{fmt}-quantize.log"))
        costs.update({r: {"quantize_s": wall / len(todo), "quantize_peak_gib": peak} for r in todo})
    return costs


def build_peer(checkpoint: Path, out: Path) -> dict:
    out = out.resolve()  # the builder runs in another directory: a relative --build was lost
    if not (out / "model.onnx").exists():
        wall, peak = run_measured(
            [sys.executable, str(HERE / "genai_builder_gemma3.py"), "-i", str(checkpoint), "-o",
             str(out), "-p", "int4", "-e", "cpu"],
            cwd=tempfile.gettempdir(),  # not the repo: see genai_builder_gemma3.py
            log_path=str(out.parent / ".genai-builder-int4.log"))
        return {"quantize_s": wall, "quantize_peak_gib": peak}
    return {"quantize_s": None, "quantize_peak_gib": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", required=True)
    parser.add_argument("--source", default="builtin:gemma3-270m")
    parser.add_argument("--formats", default="onnx,tflite")
    parser.add_argument("--recipes", default="int8,int8-calibrated,int8-dynamic,int4-block32,"
                                              "int4-calibrated,int4-all-calibrated,"
                                              "int4-head-calibrated")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-peer", action="store_true", help="skip the genai builder int4")
    parser.add_argument("--redo", action="store_true", help="re-quantize existing outputs")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--levers", action="store_true", help="only the torch fake-quant study "
                        "of grids and sensitivity-picked mixed precision (unrotated and rotated)")
    parser.add_argument("--budget-mib", type=float, default=230.0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")

    from foundation.sources import load_source
    from foundation.texts import load_text
    from quantization.recipes import RECIPES
    from runtime_check.open_runner import open_runner
    from runtime_check.runner import teacher_forced_logits
    from runtime_check.torch_runner import TorchRunner

    builds = [Path(b) for b in args.build.split(",")]
    ref = load_source(args.source)
    ids = ref.encode(" ".join(load_text(f"builtin:{n}") for n in EVAL))[: args.tokens]
    split = 128
    base = teacher_forced_logits(TorchRunner(ref.model, threads=THREADS), ids, split, DECODE_STEPS)
    checkpoint = ref.checkpoint_dir
    if args.levers:
        rows = [r for spec in (None, {"seed": 0, "block": 256})
                for r in levers(ref, ids, spec, args.budget_mib)]
        print("\n| lever (torch, round to nearest) | MiB | mean KLD | top-1 % |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['lever']} | {r['mib']:.1f} | {r['kld_mean']:.4f} | {100 * r['top1']:.1f} |")
        return
    del ref

    rows = []
    for build, fmt in [(b, f) for b in builds for f in args.formats.split(",")]:
        offered = [r for r in args.recipes.split(",") if fmt not in RECIPES[r].refused]
        costs = quantize(build, fmt, offered, args.redo)
        label = f" [{build.name}]" if len(builds) > 1 else ""
        for recipe in offered:
            cost = costs[recipe]
            runner = open_runner(build / f"{fmt}-{recipe}", threads=THREADS)
            made = json.loads((build / f"{fmt}-{recipe}" / "manifest.json").read_text())
            quant, rotated = made["quantization"], made["graph"].get("rotation")
            row = {"artifact": f"ours {fmt} {recipe} (head {quant['head']['grid']}"
                               f"{', rotated' if rotated else ''}){label}", "runtime": runner.name,
                   "mib": model_bytes(build / f"{fmt}-{recipe}") / 2**20, **cost,
                   **evaluate(runner, base, ids, split, args.reps)}
            runner.close()
            rows.append(row)
            print(json.dumps(row), flush=True)
    if not args.no_peer:
        from runtime_check.genai_runner import GenaiRunner

        peer_dir = builds[0] / "peer-genai-builder-int4"
        cost = build_peer(checkpoint, peer_dir)
        runner = GenaiRunner(peer_dir, threads=THREADS)
        row = {"artifact": "onnxruntime-genai builder int4 (acc. level 4)", "runtime": runner.name,
               "mib": model_bytes(peer_dir) / 2**20, **cost,
               **evaluate(runner, base, ids, split, args.reps)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    if len(builds) > 1:  # the decode step's cost of each build against the first's, same run
        for name in ["fp32"] + [r for r in args.recipes.split(",") if "onnx" in args.formats]:
            dirs = [b / ("onnx" if name == "fp32" else f"onnx-{name}") for b in builds]
            if all(d.exists() for d in dirs):
                ms = step_ms_side_by_side(dirs, ids[:32], 64, args.reps)
                print(f"onnx {name} decode ms/step (64 steps after 32, median of {args.reps}, "
                      f"in turn): " + ", ".join(f"{b.name} {m:.2f} ({m / ms[0]:.3f}x)"
                                               for b, m in zip(builds, ms, strict=True)), flush=True)
    print(f"\n{len(ids)} held-out tokens ({' + '.join(EVAL)}), {THREADS} threads, "
          f"decode median of {args.reps} x 32 tokens\n")
    print("| artifact | runtime | MiB | mean KLD | p99 KLD | top-1 % | PPL ratio | decode tok/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['artifact']} | {r['runtime']} | {r['mib']:.1f} | {r['kld_mean']:.4f} | "
              f"{r['kld_p99']:.3f} | {100 * r['top1']:.1f} | {r['ppl_ratio']:.3f} | "
              f"{r['decode_tps']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

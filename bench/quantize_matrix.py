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
                                              "int4-calibrated,int4-all-calibrated")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-peer", action="store_true", help="skip the genai builder int4")
    parser.add_argument("--redo", action="store_true", help="re-quantize existing outputs")
    parser.add_argument("--json", default=None, help="also write the rows here")
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

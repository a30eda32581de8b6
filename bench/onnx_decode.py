"""Our fp32 ONNX decoder vs onnxruntime-genai's model builder fp32 graph, side by side.

Same machine, same run, same token ids, 2 threads each, each graph in its own engine
(ours: onnxruntime with IO binding via OnnxRunner; theirs: onnxruntime-genai).
Prints prefill and decode tokens/s (median and p90 of N repetitions after a warm-up),
export time and peak RSS, sizes, and the ratios ours/theirs.

usage: python bench/onnx_decode.py [--source builtin:gemma3-270m] [--reps 5] [--work DIR]
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

from runtime_check.latency import median_p90

HERE = Path(__file__).resolve().parent
THREADS = 2


def build_ours(source: str, out: Path, work: str) -> tuple[float, float]:
    code = ("import sys; from foundation.sources import load_source; "
            "from exporter.onnx_export import export_onnx; "
            f"export_onnx(load_source({source!r}), {str(out)!r}, overwrite=True)")
    return run_measured([sys.executable, "-c", code], cwd=str(HERE.parent),
                        log_path=str(out.parent / "ours.log"))


def build_theirs(checkpoint: Path, out: Path, work: str) -> tuple[float, float]:
    cmd = [sys.executable, str(HERE / "genai_builder_gemma3.py"), "-i", str(checkpoint),
           "-o", str(out), "-p", "fp32", "-e", "cpu"]
    # not from the repo directory: see genai_builder_gemma3.py
    return run_measured(cmd, cwd=work, log_path=str(out.parent / "genai_builder.log"))


def measure_ours(model_dir: Path, prompt: list[int], decode_steps: int, reps: int) -> dict:
    from runtime_check.onnx_runner import OnnxRunner

    runner = OnnxRunner(model_dir, threads=THREADS)
    prefill, decode, tokens = [], [], None
    for rep in range(reps + 1):  # first is warm-up
        runner.reset()
        t0 = time.perf_counter()
        logits = runner.prefill(prompt)[-1]
        t1 = time.perf_counter()
        out = [int(np.argmax(logits))]
        for _ in range(decode_steps - 1):  # decode_steps tokens take decode_steps - 1 model runs
            logits = runner.decode(out[-1])
            out.append(int(np.argmax(logits)))
        t2 = time.perf_counter()
        if rep:
            prefill.append(len(prompt) / (t1 - t0))
            decode.append((decode_steps - 1) / (t2 - t1))
        tokens = out
    return {"prefill_tps": median_p90(prefill), "decode_tps": median_p90(decode), "tokens": tokens}


def measure_theirs(model_dir: Path, prompt: list[int], decode_steps: int, reps: int) -> dict:
    import onnxruntime_genai as og

    config_file = model_dir / "genai_config.json"
    config = json.loads(config_file.read_text())
    config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = THREADS
    config_file.write_text(json.dumps(config, indent=2))
    model = og.Model(str(model_dir))
    prefill, decode, tokens = [], [], None
    for rep in range(reps + 1):
        params = og.GeneratorParams(model)
        # max_length must cover the sliding window or GroupQueryAttention fails at prefill
        params.set_search_options(do_sample=False, max_length=max(1024, len(prompt) + decode_steps + 8))
        generator = og.Generator(model, params)
        t0 = time.perf_counter()
        generator.append_tokens(np.asarray(prompt, dtype=np.int32))
        t1 = time.perf_counter()
        out = []
        for _ in range(decode_steps):  # the first call picks from the prefill's logits
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        t2 = time.perf_counter()
        if rep:
            prefill.append(len(prompt) / (t1 - t0))
            decode.append((decode_steps - 1) / (t2 - t1))
        tokens = out
        del generator
    return {"prefill_tps": median_p90(prefill), "decode_tps": median_p90(decode), "tokens": tokens}


def _size_mib(d: Path) -> float:
    return sum(f.stat().st_size for f in d.glob("model.onnx*")) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="builtin:gemma3-270m")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--decode-steps", type=int, default=64)
    parser.add_argument("--work", default=None, help="keep the built graphs here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from foundation.sources import load_source
    from foundation.texts import load_text

    work = Path(args.work or tempfile.mkdtemp(prefix="gemma-edge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ref = load_source(args.source)
    text = " ".join(load_text(f"builtin:{n}") for n in
                    ("gemma_edge_field_notes", "austen_pride_and_prejudice_ch1",
                     "dickens_tale_of_two_cities_ch1"))
    ids = ref.encode(text)
    ours_dir, theirs_dir = work / "ours", work / "genai_builder"
    ours_build = build_ours(args.source, ours_dir, str(work))
    theirs_build = build_theirs(ref.checkpoint_dir, theirs_dir, str(work))
    del ref

    rows = []
    for n in args.prompt_tokens:
        prompt = ids[:n]
        ours = measure_ours(ours_dir, prompt, args.decode_steps, args.reps)
        theirs = measure_theirs(theirs_dir, prompt, args.decode_steps, args.reps)
        same = next((i for i, (a, b) in enumerate(zip(ours["tokens"], theirs["tokens"], strict=True))
                     if a != b), len(ours["tokens"]))
        rows.append({"prompt_tokens": n, "ours": ours, "theirs": theirs, "greedy_agree": same})

    print(f"\nexport   ours {ours_build[0]:6.1f} s, peak RSS {ours_build[1]:.2f} GiB, "
          f"{_size_mib(ours_dir):.0f} MiB | genai builder {theirs_build[0]:6.1f} s, "
          f"peak RSS {theirs_build[1]:.2f} GiB, {_size_mib(theirs_dir):.0f} MiB")
    print(f"{'prompt':>6} | {'prefill tok/s ours':>18} {'theirs':>8} {'ratio':>6} | "
          f"{'decode tok/s ours':>17} {'theirs':>8} {'ratio':>6} | greedy agree")
    for r in rows:
        po, pt = r["ours"]["prefill_tps"]["median"], r["theirs"]["prefill_tps"]["median"]
        do, dt = r["ours"]["decode_tps"]["median"], r["theirs"]["decode_tps"]["median"]
        print(f"{r['prompt_tokens']:>6} | {po:18.1f} {pt:8.1f} {po / pt:6.2f} | "
              f"{do:17.1f} {dt:8.1f} {do / dt:6.2f} | {r['greedy_agree']}/{args.decode_steps}")
    print(json.dumps({"build": {"ours": ours_build, "theirs": theirs_build}, "rows": [
        {k: v for k, v in r.items() if k not in ("ours", "theirs")} | {
            side: {m: r[side][m] for m in ("prefill_tps", "decode_tps")} for side in ("ours", "theirs")}
        for r in rows]}, indent=1))


if __name__ == "__main__":
    main()

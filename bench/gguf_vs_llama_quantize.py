"""Our calibrated Q4_0 / Q8_0 GGUF against llama.cpp's own Q4_0 / Q8_0 of the same F32 GGUF.

One run, one model, one held-out text, every file run in llama.cpp (llama-cpp-python,
runtime_check/llama_runner.py) and compared with the fp32 torch reference:

- ours: `gemma-edge export --format gguf` (F32), then `quantize --recipe q8_0-calibrated /
  q4_0-calibrated` (GPTQ on our calibration text; plus the round-to-nearest q8_0 / q4_0);
- llama.cpp's: `llama_model_quantize` (the library function llama-quantize calls) on the
  same F32 file, ftype MOSTLY_Q8_0 / MOSTLY_Q4_0, no importance matrix: what
  `llama-quantize model.gguf out.gguf Q4_0` writes.

Held-out text: the field notes + Austen and the Apache-2.0 text (never calibration text),
up to 1,024 tokens each, teacher-forced as tests/heldout.py does (prefill 128, 16 decode
steps, then the rest): pooled mean KLD, top-1 agreement (with its binomial s.e.), model
file size.

usage: python bench/gguf_vs_llama_quantize.py [--source builtin:gemma3-270m] [--work DIR]
       [--json OUT] [--tokens 1024] [--windows 2] [--rows LABEL,...]
(--tokens / --windows shorten the held-out text on a busy machine; --rows runs only the
named rows, e.g. "ours q4_0-calibrated,llama.cpp Q4_0"; files already made are reused)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import time
from pathlib import Path

WINDOWS = ("builtin:gemma_edge_field_notes+austen_pride_and_prejudice_ch1",
           "builtin:apache_license_2_0")
PREFILL, DECODE_STEPS, MAX_TOKENS = 128, 16, 1024
OURS = ("q8_0", "q8_0-calibrated", "q4_0", "q4_0-calibrated")
LLAMA = {"llama.cpp Q8_0": "MOSTLY_Q8_0", "llama.cpp Q4_0": "MOSTLY_Q4_0"}


def llama_quantize(src: Path, dst: Path, ftype_name: str, threads: int = 2) -> float:
    import llama_cpp

    dst.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{ftype_name}")
    params.nthread = threads
    started = time.time()
    code = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if code != 0:
        raise RuntimeError(f"llama_model_quantize returned {code}")
    return time.time() - started


def pooled(runner, windows) -> dict:
    from runtime_check.parity import parity_metrics
    from runtime_check.runner import teacher_forced_logits

    n = kld = agree = 0
    for ids, reference in windows:
        m = parity_metrics(reference, teacher_forced_logits(runner, ids, PREFILL, DECODE_STEPS), ids)
        n += len(ids)
        kld += m["kld_mean"] * len(ids)
        agree += round(m["top1_agreement"] * len(ids))
    top1 = agree / n
    return {"tokens": n, "kld_mean": kld / n, "top1_agreement": top1,
            "top1_se": math.sqrt(top1 * (1 - top1) / n)}


def tensor_types(path: Path) -> dict[str, int]:
    import gguf

    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="builtin:gemma3-270m")
    ap.add_argument("--work", default="/tmp/gemma-edge-gguf-bench")
    ap.add_argument("--json", help="write the rows here too")
    ap.add_argument("--tokens", type=int, default=MAX_TOKENS, help="held-out tokens per window")
    ap.add_argument("--windows", type=int, default=len(WINDOWS), help="how many windows")
    ap.add_argument("--rows", help="comma-separated row labels to run (default: all)")
    args = ap.parse_args()

    from exporter.gguf_export import export_gguf
    from foundation.sources import load_source
    from foundation.texts import load_text
    from quantization.quantize import quantize_export
    from runtime_check.llama_runner import LlamaRunner
    from runtime_check.runner import teacher_forced_logits
    from runtime_check.torch_runner import TorchRunner

    work = Path(args.work)
    ref = load_source(args.source)
    f32 = work / "gguf"
    if not (f32 / "model.gguf").is_file():
        export_gguf(ref, f32, overwrite=True)
    wanted = set(args.rows.split(",")) if args.rows else None

    def run_row(label: str) -> bool:
        return wanted is None or label in wanted

    files = {"F32 (ours)": f32 / "model.gguf"} if run_row("F32 (ours)") else {}
    seconds = {}

    for recipe in OURS:
        out = work / f"gguf-{recipe}"
        if not run_row(f"ours {recipe}"):
            continue
        if not (out / "model.gguf").is_file():
            started = time.time()
            quantize_export(f32, out, recipe, ref=ref, overwrite=True, progress=False)
            seconds[f"ours {recipe}"] = time.time() - started
        files[f"ours {recipe}"] = out / "model.gguf"
    for label, ftype in LLAMA.items():
        if not run_row(label):
            continue
        dst = work / "llama" / f"{ftype}.gguf"
        if not dst.is_file():
            seconds[label] = llama_quantize(f32 / "model.gguf", dst, ftype)
        files[label] = dst

    torch_runner = TorchRunner(ref.model, threads=2)
    windows = []
    for text in WINDOWS[:args.windows]:
        ids = ref.encode(load_text(text))[:args.tokens]
        windows.append((ids, teacher_forced_logits(torch_runner, ids, PREFILL, DECODE_STEPS)))
    rows = []
    for label, path in files.items():
        runner = LlamaRunner(path, threads=2, context=args.tokens + 8)
        try:
            metrics = pooled(runner, windows)
        finally:
            runner.close()
        rows.append({"file": label, "MiB": round(path.stat().st_size / 2**20, 1),
                     "quantize_s": round(seconds[label], 1) if label in seconds else None,
                     "types": tensor_types(path), **metrics})
        r = rows[-1]
        print(f"{label:24s} {r['MiB']:8.1f} MiB  KLD {r['kld_mean']:.4f}  top-1 "
              f"{100 * r['top1_agreement']:.2f} % (s.e. {100 * r['top1_se']:.2f})  {r['types']}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"source": args.source, "tokens_per_window": args.tokens,
                                               "windows": list(WINDOWS[:args.windows]), "rows": rows},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()

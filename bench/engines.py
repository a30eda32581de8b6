"""Packages in their engines, side by side with the peers, in one run.

- LiteRT-LM engine: our int8 `.litertlm` vs litert-torch `export_hf`'s int8 `.litertlm`
  (quantization_recipe dynamic_wi8_afp32), both through litert_lm.Benchmark.
- LiteRT-LM engine, int4: our int4 `.litertlm` (`--ours-int4-litert`, the shipped
  int4-head-calibrated by default) vs `export_hf`'s int4 (dynamic_wi4b32_afp32, 4-bit blocks of
  32); `--ours-int4-litert none` leaves the pair out. Their fidelity side by side:
  bench/package_greedy.py --peer (greedy in the engine against PyTorch).
- onnxruntime-genai: our ONNX int4 bundle vs the onnxruntime-genai model builder's int4.
- `--extra-int8 DIR` (repeatable): more int8 artifacts of ours (e.g. an unrotated export's
  int8-dynamic), packaged and measured in the same LiteRT-LM rotation, each against the peer.

Same machine, same run, 2 threads, each measurement in its own child process (peak RSS
is the engine's), median of N runs, ours and theirs alternating run by run. Prints prefill
and decode tokens/s, size, and the ratios ours/theirs.

usage: python bench/engines.py --build build [--ours-int8 tflite-int8-dynamic]
       [--ours-int4-litert tflite-int4-head-calibrated] [--ours-int4 onnx-int4-head-calibrated]
       [--extra-int8 DIR ...] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import run_measured  # bench/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
THREADS = 2
EXPORT_HF_RECIPES = {"int8": "dynamic_wi8_afp32", "int4": "dynamic_wi4b32_afp32"}
PROMPT = "The history of the printing press begins long before Gutenberg. " * 60


def _child(kind: str, path: str, prefill: int, decode: int) -> dict:
    sys.path.insert(0, str(HERE.parent))
    from foundation.artifacts import cache_root, peak_rss_bytes

    if kind == "litertlm":
        import litert_lm

        litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
        info = litert_lm.Benchmark(model_path=path, backend=litert_lm.Backend.CPU(thread_count=THREADS),
                                   prefill_tokens=prefill, decode_tokens=decode,
                                   max_num_tokens=1024, prompt=PROMPT,
                                   # XNNPACK's weight cache: never into the package, which
                                   # `check PACKAGE` would then refuse as holding an unlisted file
                                   cache_dir=str(cache_root() / "litert-lm")).run()
        out = {"prefill_tps": info.last_prefill_tokens_per_second,
               "decode_tps": info.last_decode_tokens_per_second,
               "ttft_s": info.time_to_first_token_in_second}
    else:
        from tokenizers import Tokenizer

        from runtime_check.engines import genai_timing
        from runtime_check.genai_runner import GenaiRunner

        runner = GenaiRunner(path, threads=THREADS, max_length=1024)
        ids = [2, *Tokenizer.from_file(str(Path(path) / "tokenizer.json")).encode(
            PROMPT, add_special_tokens=False).ids][:prefill]
        out = genai_timing(runner, ids, decode)
    out["peak_rss_mib"] = peak_rss_bytes() / 2**20
    return out


def measure_once(kind: str, path: Path, prefill: int, decode: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(prefill),
                           str(decode)], capture_output=True, text=True, cwd=str(HERE.parent),
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if proc.returncode:
        raise RuntimeError(f"{kind} {path}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_rotation(kind: str, paths: list[Path], reps: int, prefill: int,
                     decode: int) -> list[dict]:
    """The packages in turn, rep by rep (the order reversed every other rep), so drift in the
    machine's speed (this 2-core VM varies by 20 % over minutes) lands on all of them;
    medians per package, in the order given."""
    runs: dict[Path, list[dict]] = {p: [] for p in paths}
    for rep in range(reps):
        for path in paths if rep % 2 == 0 else paths[::-1]:
            runs[path].append(measure_once(kind, path, prefill, decode))
    return [{k: statistics.median(r[k] for r in runs[p]) for k in runs[p][0]} for p in paths]


def size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.name.startswith("model.")]
    return sum(p.stat().st_size for p in files) / 2**20


def export_hf_package(checkpoint: Path, work: Path, bits: str) -> Path:
    """litert-torch export_hf's `.litertlm` of the checkpoint under its int8 or int4 recipe."""
    out = work / f"export_hf_{bits}"
    if not list(out.rglob("*.litertlm")):
        code = ("from litert_torch.generative.export_hf import export; "
                f"export.export(model={str(checkpoint)!r}, output_dir={str(out)!r}, "
                "prefill_lengths=[32, 128, 512], cache_length=1024, "
                f"quantization_recipe={EXPORT_HF_RECIPES[bits]!r}, bundle_litert_lm=True)")
        run_measured([sys.executable, "-c", code], cwd=str(work),
                     log_path=str(work / f"export_hf_{bits}.log"))
    return next(out.rglob("*.litertlm"))


def packaged(artifact: Path, target: Path, kind: str) -> Path:
    if not target.exists():
        from exporter.package import package

        package(artifact, target, kind)
    return target / "model.litertlm" if kind == "litertlm" else target


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, path, prefill, decode = sys.argv[2:6]
        print(json.dumps(_child(kind, path, int(prefill), int(decode))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", required=True)
    parser.add_argument("--ours-int8", default="tflite-int8-dynamic")
    parser.add_argument("--ours-int4-litert", default="tflite-int4-head-calibrated",
                        help="our int4 TFLite artifact against export_hf's int4 ('none': skip)")
    parser.add_argument("--ours-int4", default="onnx-int4-head-calibrated")
    parser.add_argument("--extra-int8", action="append", default=[], type=Path,
                        help="another int8 TFLite artifact of ours, measured beside the first")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(HERE.parent))
    from foundation.sources import load_source

    build = Path(args.build)
    work = Path(args.work or tempfile.mkdtemp(prefix="gemma-edge-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = load_source("builtin:gemma3-270m").checkpoint_dir

    int8s = [(f"LiteRT-LM int8 ({args.ours_int8})",
              packaged(build / args.ours_int8, work / "ours.litertlm", "litertlm"))]
    int8s += [(f"LiteRT-LM int8 ({artifact.name})",
               packaged(artifact, work / f"extra{i}.litertlm", "litertlm"))
              for i, artifact in enumerate(args.extra_int8)]
    groups = [("litertlm", int8s, export_hf_package(checkpoint, work, "int8"))]
    if args.ours_int4_litert != "none":
        ours = packaged(build / args.ours_int4_litert, work / "ours-int4.litertlm", "litertlm")
        groups.append(("litertlm", [(f"LiteRT-LM int4 ({args.ours_int4_litert})", ours)],
                       export_hf_package(checkpoint, work, "int4")))
    theirs_bundle = work / "genai_builder_int4"
    if not (theirs_bundle / "model.onnx").exists():
        run_measured([sys.executable, str(HERE / "genai_builder_gemma3.py"), "-i", str(checkpoint),
                      "-o", str(theirs_bundle), "-p", "int4", "-e", "cpu"], cwd=str(work),
                     log_path=str(work / "genai_builder.log"))
    ours_bundle = packaged(build / args.ours_int4, work / "ours.onnx-bundle", "onnx-bundle")
    groups.append(("genai", [(f"onnxruntime-genai int4 ({args.ours_int4})", ours_bundle)],
                   theirs_bundle))
    rows = []
    for kind, ours, theirs in groups:
        *mine, b = measure_rotation(kind, [p for _, p in ours] + [theirs], args.reps,
                                    args.prefill, args.decode)
        rows += [(label, a, b, size_mib(path), size_mib(theirs))
                 for (label, path), a in zip(ours, mine, strict=True)]
    print(f"\n{THREADS} threads, prompt {args.prefill} tokens, {args.decode} decode tokens, "
          f"median of {args.reps} runs, each in a fresh process")
    print("| engine | ours MiB | theirs MiB | prefill tok/s ours | theirs | ratio | "
          "decode tok/s ours | theirs | ratio | peak RSS MiB ours | theirs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, a, b, sa, sb in rows:
        print(f"| {label} | {sa:.0f} | {sb:.0f} | {a['prefill_tps']:.0f} | {b['prefill_tps']:.0f} | "
              f"{a['prefill_tps'] / b['prefill_tps']:.2f} | {a['decode_tps']:.1f} | "
              f"{b['decode_tps']:.1f} | {a['decode_tps'] / b['decode_tps']:.2f} | "
              f"{a['peak_rss_mib']:.0f} | {b['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()

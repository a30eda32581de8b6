"""Our LiteRT export vs litert-torch's `export_hf`, side by side on one model, one run.

Both fp32 (export_hf with quantization_recipe="none"), the same prefill lengths and
KV cache length, each in its own child process so the peak RSS is that export's own.
Prints wall time, peak RSS and file size for both, and the ratios ours/theirs.

usage: python bench/export_tflite.py [--source builtin:gemma3-270m] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from measure import run_measured  # bench/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
PREFILL = (32, 128, 512)
CACHE = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="builtin:gemma3-270m")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work or tempfile.mkdtemp(prefix="gemma-edge-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    # The checkpoint directory export_hf reads (for builtin: our cached fp32 conversion).
    from foundation.sources import load_source

    ref = load_source(args.source)
    checkpoint = ref.checkpoint_dir
    fp32_mib = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors")) / 2**20
    del ref

    ours_code = (
        "from foundation.sources import load_source; "
        "from exporter.tflite_export import export_tflite; "
        f"export_tflite(load_source({args.source!r}), {str(work / 'ours')!r}, overwrite=True, "
        f"prefill_lengths={PREFILL!r}, cache_length={CACHE})")
    theirs_code = (
        "from litert_torch.generative.export_hf import export; "
        f"export.export(model={str(checkpoint)!r}, output_dir={str(work / 'export_hf')!r}, "
        f"prefill_lengths={list(PREFILL)!r}, cache_length={CACHE}, "
        "quantization_recipe='none', bundle_litert_lm=False)")
    ours = run_measured([sys.executable, "-c", ours_code], cwd=str(HERE.parent),
                        log_path=str(work / "ours.log"))
    theirs = run_measured([sys.executable, "-c", theirs_code], cwd=str(work),
                          log_path=str(work / "export_hf.log"))

    def size(d: Path) -> float:
        return sum(p.stat().st_size for p in d.rglob("*.tflite")) / 2**20

    rows = {"ours": (*ours, size(work / "ours")), "export_hf": (*theirs, size(work / "export_hf"))}
    print(f"fp32 checkpoint: {fp32_mib:.0f} MiB")
    print(f"{'':10} {'wall s':>8} {'peak RSS GiB':>13} {'x ckpt':>7} {'tflite MiB':>11}")
    for name, (wall, rss, mib) in rows.items():
        print(f"{name:10} {wall:8.1f} {rss:13.2f} {rss * 1024 / fp32_mib:7.2f} {mib:11.0f}")
    print(f"ratio ours/export_hf: wall {ours[0] / theirs[0]:.2f}, peak RSS {ours[1] / theirs[1]:.2f}")
    print(json.dumps({"checkpoint_mib": fp32_mib, **{k: dict(zip(("wall_s", "peak_rss_gib",
                      "tflite_mib"), v, strict=True)) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()

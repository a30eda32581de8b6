"""How much a real int8 artifact's top-1 agreement moves with the text and the kernels.

The int8 gate (top-1 >= 97 %) is met or missed by a handful of tokens in 512: the ones
where the reference's two best logits nearly tie. This measures, on held-out windows of
up to 1,024 tokens (the LiteRT cache) each, per kernel path LiteRT offers without
rebuilding it (XNNPACK, the default; TFLite's builtin kernels without XNNPACK), the mean
KLD, top-1, the reference's near-ties (top-2 gap < 0.1) and where the misses fall.

    python bench/int8_top1_noise.py BUILD_DIR [ARTIFACT ...]   # e.g. tflite-int8-dynamic
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

WINDOWS = {  # held-out text only: never calibration text
    "eval (field notes + Austen)": "builtin:gemma_edge_field_notes+austen_pride_and_prejudice_ch1",
    "Apache-2.0 text": "builtin:apache_license_2_0",
}


def _runner(artifact: Path, kernels: str):
    from runtime_check.litert_runner import LiteRTRunner

    runner = LiteRTRunner(artifact, threads=2)
    if kernels == "builtin":
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        path = artifact / "model.tflite"
        runner.interpreter = Interpreter(
            model_path=str(path), num_threads=2,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        runner._runners = {n: runner.interpreter.get_signature_runner(n)
                           for n in runner.interpreter.get_signature_list()}
    return runner


def main() -> int:
    from foundation.sources import load_source
    from foundation.texts import load_text
    from runtime_check.parity import parity_metrics
    from runtime_check.runner import teacher_forced_logits
    from runtime_check.torch_runner import TorchRunner

    parser = argparse.ArgumentParser()
    parser.add_argument("build", type=Path)
    parser.add_argument("artifacts", nargs="*", default=["tflite-int8-dynamic"])
    parser.add_argument("--kernels", default="xnnpack,builtin")
    args = parser.parse_args()
    ref = load_source("builtin:gemma3-270m")
    torch_runner = TorchRunner(ref.model, threads=2)
    windows = {}
    for name, text in WINDOWS.items():
        ids = ref.encode(load_text(text))[:1024]
        logits = teacher_forced_logits(torch_runner, ids, 128, 128)
        top2 = np.sort(logits, axis=-1)[:, -2:]
        windows[name] = (ids, logits, top2[:, 1] - top2[:, 0])
    rows = []
    for artifact in args.artifacts:
        for kernels in args.kernels.split(","):
            runner = _runner(args.build / artifact, kernels)
            for name, (ids, base, gaps) in windows.items():
                t0 = time.time()
                got = teacher_forced_logits(runner, ids, 128, 128)
                m = parity_metrics(base, got, ids)
                missed = np.argmax(got, -1) != np.argmax(base, -1)
                n = len(ids)
                rows.append({"artifact": artifact, "kernels": kernels, "window": name, "tokens": n,
                             "kld_mean": m["kld_mean"], "top1": m["top1_agreement"],
                             "misses": int(missed.sum()),
                             "misses_at_near_ties": int((missed & (gaps < 0.1)).sum()),
                             "near_ties": int((gaps < 0.1).sum()),
                             "seconds": round(time.time() - t0, 1)})
                print(json.dumps(rows[-1]), flush=True)
            runner.close()
    for artifact in args.artifacts:
        for kernels in args.kernels.split(","):
            sel = [r for r in rows if r["artifact"] == artifact and r["kernels"] == kernels]
            n = sum(r["tokens"] for r in sel)
            hits = n - sum(r["misses"] for r in sel)
            p = hits / n
            print(f"{artifact} [{kernels}]: top-1 {p:.4f} over {n} tokens "
                  f"(binomial s.e. {math.sqrt(p * (1 - p) / n):.4f}), mean KLD "
                  f"{sum(r['kld_mean'] * r['tokens'] for r in sel) / n:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

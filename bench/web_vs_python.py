"""In-browser WASM (transformers.js + onnxruntime-web in headless Chromium) against
onnxruntime in Python, on the same ONNX artifact, in one run.

    .venv/bin/python bench/web_vs_python.py PACKAGE.web [PACKAGE.web ...] [--threads 2]

For each web package: the artifact it was made from (manifest inputs.artifact) runs in
onnxruntime (runtime_check.onnx_runner, Python) and the package's page in Chromium, each
with the same token ids (a held-out text cut to --prompt-tokens, BOS first), the same
threads, a warm-up first; decode runs --decode-tokens steps with stop tokens masked in the
page (min_new_tokens) and ignored in Python. Reports load time, first-token latency,
prefill and decode tok/s, the browser's resident memory (all its processes) and the
Python process's, whether the greedy tokens agree (the Python side without masking,
32 tokens), and the package size. Timings on a shared machine are noisy: compare the
ratios measured side by side, not single numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def python_side(artifact: Path, ids: list[int], decode: int, threads: int, stops) -> dict:
    import numpy as np
    import psutil

    from runtime_check.onnx_runner import OnnxRunner
    from runtime_check.runner import greedy_generate

    t = time.perf_counter()
    runner = OnnxRunner(artifact, threads=threads)
    load_s = time.perf_counter() - t
    runner.prefill(ids[:16])  # warm-up
    runner.reset()
    t0 = time.perf_counter()
    token = int(np.argmax(runner.prefill(ids)[-1]))
    t1 = time.perf_counter()
    for _ in range(decode - 1):
        token = int(np.argmax(runner.decode(token)))
    t2 = time.perf_counter()
    runner.reset()
    greedy = list(greedy_generate(runner, ids, 32, stop_ids=stops))
    rss = psutil.Process().memory_info().rss
    runner.close()
    return {"load_s": load_s, "ttft_s": t1 - t0, "prefill_tps": len(ids) / (t1 - t0),
            "decode_tps": (decode - 1) / (t2 - t1), "rss_mib": rss / 2**20, "greedy": greedy}


def browser_side(package: Path, ids: list[int], decode: int, threads: int) -> dict:
    from runtime_check.web_engine import browser_session

    with browser_session(package) as tab:
        load = tab.open(threads=threads)
        tab.generate_ids(ids[:16], 2, 2)  # warm-up
        r = tab.generate_ids(ids, decode, decode)
        greedy = tab.generate_ids(ids, 32, 0)["ids"]
        rss = tab.memory_bytes()
        text = tab.page.inner_text("#output") if tab.page.is_visible("#output") else ""
        tab.page.screenshot(path=str(Path("/tmp") / f"{package.name}.png"))
    return {"load_s": load["load_ms"] / 1000, "ttft_s": r["ttft_ms"] / 1000,
            "prefill_tps": r["prefill_tok_s"], "decode_tps": r["decode_tok_s"],
            "rss_mib": rss / 2**20, "greedy": greedy, "threads": load["threads"],
            "isolated": load["isolated"], "page_text_chars": len(text)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    args = parser.parse_args()

    from tokenizers import Tokenizer

    from foundation.integrity import verify_package
    from foundation.texts import load_text

    rows = []
    for package in args.packages:
        manifest = verify_package(package)
        artifact = Path(manifest["inputs"]["artifact"])
        tok = Tokenizer.from_file(str(package / "tokenizer.json"))
        text = load_text("builtin:gemma_edge_field_notes")
        ids = [manifest["tokens"]["bos_token_id"],
               *tok.encode(text, add_special_tokens=False).ids][: args.prompt_tokens]
        stops = sorted(manifest["tokens"]["stop_tokens"].values())
        py = python_side(artifact, ids, args.decode_tokens, args.threads, stops)
        web = browser_side(package, ids, args.decode_tokens, args.threads)
        size = sum(e["bytes"] for e in manifest["files"].values())
        model = sum(e["bytes"] for n, e in manifest["files"].items() if n.startswith("onnx/"))
        row = {"package": str(package), "recipe": manifest.get("recipe"),
               "package_mib": round(size / 2**20, 1), "model_mib": round(model / 2**20, 1),
               "python": {k: v for k, v in py.items() if k != "greedy"},
               "browser": {k: v for k, v in web.items() if k != "greedy"},
               "greedy_equal": py["greedy"] == web["greedy"],
               "greedy_python": py["greedy"], "greedy_browser": web["greedy"],
               "decode_ratio_browser_over_python": web["decode_tps"] / py["decode_tps"],
               "prefill_ratio_browser_over_python": web["prefill_tps"] / py["prefill_tps"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency of an artifact in its own runtime, measured in a child process so the peak RSS
is the runtime's alone (no torch, no reference model in that process).

Figures: load time, time to first token and prefill tokens/s per prompt length, and decode
tokens/s right after each of those prompts (context depth = prompt length, so no
repetition prefills a context only to decode from it); one warm-up then `reps`
repetitions, median and p90.
Run as `python -m runtime_check.latency ARTIFACT IDS.json` (what measure_latency does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundation.artifacts import peak_rss_bytes
from foundation.errors import GemmaEdgeError


def median_p90(values: list[float]) -> dict[str, float]:
    """Median and 90th percentile (nearest rank) of repeated measurements."""
    import statistics

    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median": statistics.median(ordered), "p90": p90}


def measure_latency(artifact: str | Path, token_ids: Sequence[int], *, reps: int = 5,
                    threads: int = 2, prompt_lengths: Sequence[int] = (32, 128),
                    decode_steps: int = 16) -> dict[str, Any]:
    """Spawn the child, return its figures. Decode rates are timed over `decode_steps`
    tokens per repetition (16: every step is a full pass over the weights, so a short
    run times the same work as a long one, and a build checks six artifacts)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"ids": list(map(int, token_ids)), "reps": reps, "threads": threads,
                   "prompt_lengths": list(prompt_lengths), "decode_steps": decode_steps}, fh)
        spec = fh.name
    try:
        proc = subprocess.run([sys.executable, "-m", "runtime_check.latency", str(artifact), spec],
                              capture_output=True, text=True)
    finally:
        Path(spec).unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GemmaEdgeError(f"latency run on {artifact} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child(artifact: str, spec_file: str) -> dict[str, Any]:
    import numpy as np

    from runtime_check.open_runner import open_runner

    spec = json.loads(Path(spec_file).read_text())
    ids, reps = spec["ids"], spec["reps"]
    t0 = time.perf_counter()
    runner = open_runner(artifact, threads=spec["threads"])
    load_s = time.perf_counter() - t0
    cap = getattr(runner, "cache_len", None) or len(ids) + spec["decode_steps"] + 1
    room = min(len(ids), cap - spec["decode_steps"] - 1)
    lengths = [n for n in spec["prompt_lengths"] if n <= room]

    ttft, prefill, decode = {}, {}, {}
    for n in lengths:
        firsts, rates, decode_rates = [], [], []
        for rep in range(reps + 1):
            runner.reset()
            start = time.perf_counter()
            logits = runner.prefill(ids[:n])
            token = int(np.argmax(logits[-1]))
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(spec["decode_steps"]):
                token = int(np.argmax(runner.decode(token)))
            if rep:  # the first run is warm-up
                firsts.append(elapsed * 1000)
                rates.append(n / elapsed)
                decode_rates.append(spec["decode_steps"] / (time.perf_counter() - start))
        ttft[str(n)], prefill[str(n)] = median_p90(firsts), median_p90(rates)
        decode[str(n)] = median_p90(decode_rates)
    runner.close()
    first_len = str(lengths[0]) if lengths else None
    return {
        "runtime": runner.name, "threads": spec["threads"], "reps": reps,
        "load_s": round(load_s, 3),
        "ttft_ms_by_prompt": ttft, "prefill_tps_by_prompt": prefill,
        "decode_tps_by_depth": decode,
        "ttft_ms": ttft[first_len]["median"] if first_len else None,
        "ttft_prompt_tokens": int(first_len) if first_len else None,
        "decode_tps": decode[first_len]["median"] if first_len else None,
        "peak_rss_mib": peak_rss_bytes() / 2**20,  # VmHWM: this process's own peak
    }


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2])))

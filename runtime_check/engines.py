"""The on-device engines a package runs in, behind one small interface.

- `.litertlm` -> the LiteRT-LM engine (litert-lm-api: the same C++ engine as the Android
  library). It tokenizes, adds BOS and stops on the package's stop tokens itself, which is
  exactly what the package metadata must get right.
- ONNX bundle -> onnxruntime-genai, reading genai_config.json. Its tokenizer does not add
  BOS for Gemma (docs/reference.md, Stack and pitfalls), so we encode with the bundle's tokenizer.json and add it.

`generate` streams text, greedy. `benchmark` reports TTFT, prefill and decode tokens/s
from the engine's own counters, and runs in a child process so peak RSS is the engine's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from foundation.artifacts import cache_root
from foundation.errors import GemmaEdgeError
from foundation.families import implementation
from foundation.formats import get_package_kind, resolve


def open_engine(package_dir: str | Path, *, threads: int = 2, max_tokens: int | None = None):
    from foundation.integrity import verify_package  # hashes first: never load a tampered file

    package_dir = Path(package_dir)
    manifest = verify_package(package_dir)
    kind = get_package_kind(manifest.get("package"))
    engine_ref = implementation(manifest.get("inputs", {}).get("family"), f"{kind.name}.engine",
                                kind.engine)
    engine = resolve(engine_ref)(package_dir, manifest, threads=threads, max_tokens=max_tokens)
    verify_token_metadata(engine)
    return engine


def verify_token_metadata(engine) -> None:
    """The BOS and stop tokens the engine actually read must be the tokenizer's: an engine
    that does not know <end_of_turn> never ends an IT model's turn."""
    want = engine.manifest["tokens"]
    got = engine.token_metadata()
    stops = sorted(s[0] for s in got["stop_token_ids"] if len(s) == 1)
    if got["bos_token_id"] != want["bos_token_id"] or stops != sorted(want["stop_tokens"].values()):
        engine.close()
        raise GemmaEdgeError(
            f"the {engine.name} engine reads BOS {got['bos_token_id']} and stop tokens {stops} from "
            f"this package, but its tokenizer has BOS {want['bos_token_id']} and stop tokens "
            f"{want['stop_tokens']}", "rebuild the package with `gemma-edge package`")


class LiteRTLMEngine:
    name = "litert-lm"

    def __init__(self, package_dir: Path, manifest: dict, *, threads: int, max_tokens: int | None):
        import litert_lm

        self._lm = litert_lm
        litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
        self.manifest = manifest
        self.path = str(package_dir / manifest["model_file"])
        self.threads = threads
        self.max_tokens = max_tokens or manifest.get("graph", {}).get("cache_length")
        # the engine's XNNPACK weight cache goes to the user cache, never into the package
        # (a package holds exactly what its manifest lists)
        cache = cache_root() / "litert-lm"
        cache.mkdir(parents=True, exist_ok=True)
        self.engine = litert_lm.Engine(self.path, backend=litert_lm.Backend.CPU(thread_count=threads),
                                       max_num_tokens=self.max_tokens, cache_dir=str(cache))

    def token_metadata(self) -> dict[str, Any]:
        """What the engine itself read from the package (BOS, stop-token id sequences)."""
        return {"bos_token_id": self.engine.bos_token_id, "stop_token_ids": self.engine.eos_token_ids}

    def tokenize(self, text: str) -> list[int]:
        return list(self.engine.tokenize(text))

    def generate(self, prompt: str, max_new_tokens: int, *, chat: bool = False) -> Iterator[str]:
        session = self.engine.create_session(
            apply_prompt_template=chat, max_output_tokens=max_new_tokens,
            sampler_config=self._lm.SamplerConfig(top_k=1, temperature=0.0, seed=0))
        try:
            session.run_prefill([prompt])
            for response in session.run_decode_async():
                yield from response.texts
        finally:
            session.close()

    def close(self) -> None:
        self.engine.close()


class GenaiEngine:
    name = "onnxruntime-genai"

    def __init__(self, package_dir: Path, manifest: dict, *, threads: int,
                 max_tokens: int | None = None):
        """max_tokens: the genai_config's search.max_length bounds generation instead."""
        from tokenizers import Tokenizer

        self.manifest = manifest
        self.model_dir = package_dir = Path(package_dir)
        self.runner = self._runner(package_dir, threads)
        self.tokenizer = Tokenizer.from_file(str(package_dir / "tokenizer.json"))
        self.bos = manifest["tokens"]["bos_token_id"]
        self.stops = set(manifest["tokens"]["stop_tokens"].values())

    def token_metadata(self) -> dict[str, Any]:
        config = json.loads((self.model_dir / "genai_config.json").read_text())["model"]
        eos = config["eos_token_id"]
        return {"bos_token_id": config["bos_token_id"],
                "stop_token_ids": [[e] for e in (eos if isinstance(eos, list) else [eos])]}

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def generate(self, prompt: str, max_new_tokens: int, *, chat: bool = False) -> Iterator[str]:
        if chat:
            from foundation.chat import format_chat

            text = format_chat([{"role": "user", "content": prompt}], add_generation_prompt=True,
                               bos_token="")
        else:
            text = prompt
        from runtime_check.generation import stream_pieces

        self.runner.reset()
        logits = self._prefill([self.bos, *self.tokenize(text)])

        yield from stream_pieces(logits, self.runner.decode, self.tokenizer.decode, self.stops,
                                 max_new_tokens)

    def close(self) -> None:
        self.runner.close()

    def _runner(self, package_dir: Path, threads: int):
        from runtime_check.genai_runner import GenaiRunner

        return GenaiRunner(package_dir, threads=threads)

    def _prefill(self, ids: list[int]):
        """The last position's logits after the prompt."""
        return self.runner.prefill_last(ids)


def benchmark(package_dir: str | Path, *, prefill_tokens: int = 128, decode_tokens: int = 64,
              threads: int = 2, prompt: str | None = None) -> dict[str, Any]:
    """Engine-reported TTFT and tokens/s, in a child process (its peak RSS is the engine's)."""
    from foundation.integrity import verify_package

    manifest = verify_package(package_dir)
    room = package_context(package_dir, manifest)
    if prefill_tokens + decode_tokens > room:
        raise GemmaEdgeError(f"--prefill-tokens {prefill_tokens} + --decode-tokens {decode_tokens} "
                             f"do not fit the package's context of {room} tokens",
                             f"ask for {room} tokens or fewer in all, e.g. --prefill-tokens "
                             f"{max(room // 2, 1)} --decode-tokens {max(room // 4, 1)}")
    spec = json.dumps({"package": str(package_dir), "prefill": prefill_tokens,
                       "decode": decode_tokens, "threads": threads, "prompt": prompt})
    proc = subprocess.run([sys.executable, "-m", "runtime_check.engines", spec],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GemmaEdgeError(f"benchmark of {package_dir} failed: {tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result.get("decode_tokens"):  # never report 0 tok/s as a measurement
        raise GemmaEdgeError(f"the engine decoded no tokens in the benchmark of {package_dir}",
                             "ask for fewer prefill tokens (the prompt may fill the context)")
    return result


def package_context(package_dir: str | Path, manifest: dict) -> int:
    """How many tokens (prompt + generated) the package's engine holds."""
    if manifest.get("graph", {}).get("state"):  # recurrent: a fixed-size state, any context
        return 1 << 20
    if manifest.get("package") == "onnx-bundle":
        config = json.loads((Path(package_dir) / "genai_config.json").read_text())
        return int(config["search"]["max_length"])
    return int(manifest.get("graph", {}).get("cache_length") or 1024)


def genai_timing(runner, ids: list[int], decode: int) -> dict[str, Any]:
    """TTFT, prefill and decode tokens/s of one greedy run in onnxruntime-genai (after a
    short warm-up): the prompt goes in one append, as an app would send it."""
    import time

    import numpy as np

    runner.prefill_last(ids[:16])
    runner.reset()
    t0 = time.perf_counter()
    logits = runner.prefill_last(ids)
    t1 = time.perf_counter()
    token = int(np.argmax(logits))
    for _ in range(decode):
        token = int(np.argmax(runner.decode(token)))
    t2 = time.perf_counter()
    return {"prompt_tokens": len(ids), "ttft_s": t1 - t0, "prefill_tps": len(ids) / (t1 - t0),
            "decode_tokens": decode, "decode_tps": decode / (t2 - t1)}


def _bench_child(spec: dict) -> dict[str, Any]:
    import time

    from foundation.artifacts import peak_rss_bytes

    start = time.perf_counter()
    engine = open_engine(spec["package"], threads=spec["threads"])
    load_s = time.perf_counter() - start
    text = spec["prompt"] or ("The history of the printing press begins long before Gutenberg. " * 60)
    result = {"engine": engine.name, "threads": spec["threads"], "load_s": round(load_s, 3)}
    if engine.name == LiteRTLMEngine.name:  # (this may run as __main__: no isinstance)
        lm = engine._lm
        path, cache = engine.path, engine.max_tokens
        engine.close()
        info = lm.Benchmark(model_path=path, backend=lm.Backend.CPU(thread_count=spec["threads"]),
                            prefill_tokens=spec["prefill"], decode_tokens=spec["decode"],
                            max_num_tokens=cache, prompt=text,
                            cache_dir=str(cache_root() / "litert-lm")).run()
        result.update(prompt_tokens=info.last_prefill_token_count,
                      ttft_s=info.time_to_first_token_in_second,
                      prefill_tps=info.last_prefill_tokens_per_second,
                      decode_tokens=info.last_decode_token_count,
                      decode_tps=info.last_decode_tokens_per_second)
    elif hasattr(engine, "benchmark"):  # an engine that times itself (the web page)
        result.update(engine.benchmark(text, spec["prefill"], spec["decode"]))
        engine.close()
    else:
        ids = [engine.bos, *engine.tokenize(text)][: spec["prefill"]]
        result.update(genai_timing(engine.runner, ids, spec["decode"]))
        engine.close()
    result["peak_rss_mib"] = round(peak_rss_bytes() / 2**20, 1)
    return result


if __name__ == "__main__":
    print(json.dumps(_bench_child(json.loads(sys.argv[1]))))

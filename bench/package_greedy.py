"""Greedy output of every package of a build, in its on-device engine, against PyTorch.

For each package under BUILD/packages (`.litertlm` in the LiteRT-LM engine, ONNX bundles
in onnxruntime-genai): greedy continuations of the check prompts, and how many leading
tokens equal the reference's (the engines stream text, so a match is a reference prefix
whose decoded text the engine's output starts with).

`--peer` adds packages other tools wrote (a `.litertlm` file, or an onnxruntime-genai model
directory such as the model builder's), run the same way, for comparison.

usage: python bench/package_greedy.py --build build [--tokens 32] [--source builtin:gemma3-270m]
       [--peer PATH ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", required=True)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--source", default="builtin:gemma3-270m")
    parser.add_argument("--peer", action="append", default=[], help="another tool's package")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(HERE.parent))
    from foundation.sources import load_source
    from runtime_check.check import DEFAULT_PROMPTS
    from runtime_check.engine_check import matched_tokens
    from runtime_check.engines import open_engine
    from runtime_check.runner import greedy_generate
    from runtime_check.torch_runner import TorchRunner

    ref = load_source(args.source)
    torch_runner = TorchRunner(ref.model, threads=2)
    expected = {p: list(greedy_generate(torch_runner, ref.encode(p), args.tokens,
                                        stop_ids=ref.stop_token_ids)) for p in DEFAULT_PROMPTS}
    packages = sorted(Path(args.build, "packages").iterdir())
    print(f"| package | engine | {' | '.join(repr(p[:24]) for p in DEFAULT_PROMPTS)} |")
    print("|---|---|" + "---|" * len(DEFAULT_PROMPTS))
    for package in [*packages, *map(Path, args.peer)]:
        engine = open_engine(package, threads=2) if package in packages else peer_engine(
            package, ref)
        cells = []
        for prompt in DEFAULT_PROMPTS:
            text = "".join(engine.generate(prompt, args.tokens))
            cells.append(f"{matched_tokens(ref.tokenizer, expected[prompt], text)}/{len(expected[prompt])}")
        engine.close()
        print(f"| {package.name} | {engine.name} | {' | '.join(cells)} |", flush=True)


def peer_engine(path: Path, ref):
    """An engine for a package without our manifest: token metadata from the source's tokenizer."""
    from runtime_check.engines import GenaiEngine, LiteRTLMEngine

    if path.suffix == ".litertlm":
        return LiteRTLMEngine(path.parent, {"model_file": path.name, "graph": {"cache_length": 1024}},
                              threads=2, max_tokens=1024)
    stops = {t: ref.tokenizer.convert_tokens_to_ids(t) for t in ("<eos>", "<end_of_turn>")}
    tokens = {"bos_token_id": ref.tokenizer.bos_token_id, "stop_tokens": stops}
    return GenaiEngine(path, {"tokens": tokens}, threads=2)


if __name__ == "__main__":
    main()

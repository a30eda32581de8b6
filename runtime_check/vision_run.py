"""`gemma-edge run SOURCE|EXPORT --image FILE --prompt TEXT` (and ShieldGemma 2's `--policy`).

SOURCE runs in transformers (the reference), a vision export directory in onnxruntime; both
through the runner protocol with `set_images`. Images are preprocessed as the source's
processor does (the export's manifest records how). ShieldGemma 2 prints, per policy, the
violation probability: softmax over (Yes, No) at the last prompt position, as
ShieldGemma2ForImageClassification computes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError
from foundation.images import pixel_values, processor_config
from foundation.vision_prompt import POLICIES, generator, policy_prompt_ids, prompt_ids


def yes_probability(logits_last: np.ndarray, yes_no: Sequence[int]) -> float:
    """softmax over (Yes, No) at the last position: the violation probability."""
    pair = np.asarray(logits_last, np.float64)[list(yes_no)]
    pair = np.exp(pair - pair.max())
    return float(pair[0] / pair.sum())


def run_vision(ref, images: Sequence[str | Path], prompt: str | None, *,
               policies: Sequence[str] = (), export_dir: str | Path | None = None,
               max_new_tokens: int = 64, threads: int | None = None,
               on_piece: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Greedy text after the images and prompt, or (ShieldGemma 2) violation probabilities."""
    from runtime_check.generation import stream_text

    if not ref.family.vision:
        raise GemmaEdgeError(f"--image needs a vision-language model; {ref.spec} is "
                             f"{ref.family.title}, which reads text only",
                             "drop --image, or pass a PaliGemma, Gemma 3 (4B+) or ShieldGemma 2 source")
    classifier = bool(ref.family.vision.get("classifier"))
    if policies and not classifier:
        raise GemmaEdgeError("--policy is for ShieldGemma 2", "drop --policy, or pass a "
                             "ShieldGemma 2 source")
    if classifier and prompt is not None:
        raise GemmaEdgeError("ShieldGemma 2 classifies an image against policies, not a prompt",
                             "pass --policy NAME (" + ", ".join(POLICIES) + ") instead of --prompt")
    if classifier and len(images) != 1:
        raise GemmaEdgeError("ShieldGemma 2 classifies one image at a time",
                             "pass one --image")
    if not classifier and prompt is None:
        raise GemmaEdgeError("the following arguments are required: --prompt",
                             "pass --prompt TEXT with --image")
    if export_dir is not None:  # an export or package: its format's vision runner
        from runtime_check.open_runner import open_runner

        runner = open_runner(export_dir, threads=threads)
        settings = runner.facts["preprocessing"]
    else:
        from runtime_check.vision_torch_runner import TorchVisionRunner

        runner = TorchVisionRunner(ref.model, threads=threads)
        settings = processor_config(ref.family, generator(ref.model, ref.family).config,
                                    ref.checkpoint_dir)
    pixels = pixel_values(images, settings)
    if classifier:
        model = ref.model
        yes_no = (int(model.yes_token_index), int(model.no_token_index))
        result = {}
        for policy in policies or list(POLICIES):
            runner.reset()
            runner.set_images(pixels)
            result[policy] = yes_probability(runner.prefill(policy_prompt_ids(ref, policy))[-1],
                                             yes_no)
        runner.close()
        return {"source": ref.spec, "engine": runner.name, "images": [str(i) for i in images],
                "violation_probability": result}
    ids = prompt_ids(ref, prompt, images=len(images))
    runner.reset()
    runner.set_images(pixels)
    started = time.perf_counter()
    first_at, tokens, pieces = None, [], []
    for token, piece in stream_text(runner, ref.tokenizer, ids, max_new_tokens, ref.stop_token_ids):
        first_at = first_at or time.perf_counter()
        tokens.append(token)
        pieces.append(piece)
        if on_piece:
            on_piece(piece)
    runner.close()
    return {"source": ref.spec, "engine": runner.name, "images": [str(i) for i in images],
            "prompt": prompt, "prompt_tokens": len(ids), "generated_tokens": tokens,
            "text": "".join(pieces), "stopped": bool(tokens) and tokens[-1] in ref.stop_token_ids,
            "ttft_seconds": round(first_at - started, 4) if first_at else None,
            "decode_tokens_per_second": round((len(tokens) - 1) / (time.perf_counter() - first_at), 2)
            if len(tokens) > 1 else None}

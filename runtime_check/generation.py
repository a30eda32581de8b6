"""Streaming text out of a runner: greedy tokens decoded into text as they arrive."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from runtime_check.runner import Runner, greedy_generate


def stream_text(runner: Runner, tokenizer, prompt_ids: Sequence[int], max_new_tokens: int,
                stop_ids: Sequence[int]) -> Iterator[tuple[int, str]]:
    """Yield (token id, new text) pairs; text is held back while it ends mid-character."""
    generated: list[int] = []
    shown = ""
    for token in greedy_generate(runner, prompt_ids, max_new_tokens, stop_ids):
        generated.append(token)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            yield token, ""
            continue
        yield token, text[len(shown):]
        shown = text

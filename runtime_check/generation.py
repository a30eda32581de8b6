"""Streaming text out of a runner: greedy tokens decoded into text as they arrive."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

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


def stream_pieces(logits, decode: Callable[[int], object], detokenize: Callable[[list], str],
                  stop_ids, max_new_tokens: int) -> Iterator[str]:
    """Greedy from a prompt's last logits, as the package engines run it: yield new text as
    soon as it ends on a whole character, then whatever is left. decode(token) gives the
    next logits; detokenize(ids) the text of the tokens so far."""
    import numpy as np

    out: list[int] = []
    shown = ""
    for _ in range(max_new_tokens):
        token = int(np.argmax(logits))
        if token in stop_ids:
            break
        out.append(token)
        text = detokenize(out)
        if len(text) > len(shown) and not text.endswith("\ufffd"):  # wait for whole chars
            yield text[len(shown):]
            shown = text
        logits = decode(token)
    text = detokenize(out)
    if len(text) > len(shown):
        yield text[len(shown):]

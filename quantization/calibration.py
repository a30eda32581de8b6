"""Calibration text and the layer-input statistics GPTQ needs.

Calibration and evaluation text never overlap: evaluation (`gemma-edge check`) reads the
shipped prose `gemma_edge_field_notes` and `austen_pride_and_prejudice_ch1`; the default
calibration set is the other shipped prose (Dickens, Lincoln) plus the Python language
reference's topic texts that every CPython installs (`pydoc_data.topics`: ~460 kB of real
English technical prose with some code) — nothing is downloaded.
`--calibration FILE` takes a user's own text instead.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError
from quantization.recipes import HEAD

log = logging.getLogger("gemma_edge")

DEFAULT_CALIBRATION = "builtin:calibration"
EVALUATION_TEXTS = ("gemma_edge_field_notes", "austen_pride_and_prejudice_ch1", "apache_license_2_0",
                    "python_code_eval")
_CALIBRATION_PROSE = "builtin:dickens_tale_of_two_cities_ch1+lincoln_gettysburg_address"


def calibration_text(spec: str = DEFAULT_CALIBRATION) -> str:
    from foundation.texts import load_text

    if spec != DEFAULT_CALIBRATION:
        if spec.startswith("builtin:") and any(n in spec for n in EVALUATION_TEXTS):
            raise GemmaEdgeError(f"calibration text {spec} overlaps the evaluation text",
                                 f"calibrate on other text than {', '.join(EVALUATION_TEXTS)}")
        return load_text(spec)
    from pydoc_data import topics

    docs = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    return load_text(_CALIBRATION_PROSE) + "\n\n" + docs


def calibration_batches(ref, spec: str = DEFAULT_CALIBRATION, *, tokens: int = 4096,
                        seq_len: int = 512) -> list[list[int]]:
    """Token windows of `seq_len` (each starting with BOS) covering ~`tokens` tokens."""
    ids = ref.encode(calibration_text(spec), chat=False)
    bos = ids[:1]
    body = ids[1:]
    if len(body) < 64:
        raise GemmaEdgeError(f"the calibration text has only {len(body)} tokens",
                             "pass a longer --calibration text (a few pages)")
    step = seq_len - 1
    windows = [bos + body[i:i + step] for i in range(0, len(body), step)]
    windows = [w for w in windows if len(w) > 16]
    if len(windows) * step > tokens:  # spread the windows over the whole text
        pick = np.linspace(0, len(windows) - 1, max(1, tokens // step)).round().astype(int)
        windows = [windows[i] for i in sorted(set(pick.tolist()))]
    return windows


def collect_hessians(model, batches: list[list[int]], names: list[str]) -> dict[str, Any]:
    """H = Σ xxᵀ over every token of `batches` for the input of each named Linear, from one
    forward pass holding all of them (quantization.layer_calibration yields the same
    matrices one decoder layer at a time, for models whose Hessians do not fit).

    Linears reading the same tensor (q/k/v, gate/up) share one matrix (the same array
    object, so work derived from it, like GPTQ's inverse, is done once: see gptq.Factors).
    """
    import torch

    # The LM head's input is the base model's (normed) last hidden state: fed directly,
    # which skips the 262k-wide logits of every calibration token.
    head = HEAD in names and hasattr(model, "model")
    with hessian_hooks(model, [n for n in names if not (head and n == HEAD)]) as acc, \
            torch.no_grad():
        for batch in batches:
            if head:
                out = model.model(input_ids=torch.tensor([batch]), use_cache=False)
                acc.feed(HEAD, out.last_hidden_state)
            else:
                model(input_ids=torch.tensor([batch]), use_cache=False)
    return acc.result(names)


class _Hessians:
    """Running Σ xxᵀ per input (q/k/v and gate/up share one) and token counts."""

    def __init__(self):
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def feed(self, key: str, x) -> None:
        import torch

        # float32 within a window (BLAS-fast), float64 across windows
        x = x.detach().reshape(-1, x.shape[-1]).float()
        h = (x.T @ x).to(torch.float64)
        self.sums[key] = self.sums[key] + h if key in self.sums else h
        self.counts[key] = self.counts.get(key, 0) + x.shape[0]

    def result(self, names: list[str]) -> dict[str, Any]:
        shared = {key: (h / self.counts[key]).numpy() for key, h in self.sums.items()}
        return {name: shared[_alias(name, names)] for name in names}  # aliases share one array


def shared_input(name: str) -> str:
    """The Linear whose input `name` reads too: q/k/v read q_proj's, gate/up gate_proj's."""
    return name.replace("k_proj", "q_proj").replace("v_proj", "q_proj").replace("up_proj", "gate_proj")


def _alias(name: str, names: list[str]) -> str:
    key = shared_input(name)
    return key if key in names else name


@contextmanager
def hessian_hooks(model, names: list[str]):
    """Hooks accumulating the input Hessians of the named Linears while the block runs;
    yields the accumulator (`.feed(name, x)` adds an input by hand, `.result(names)`)."""
    modules = dict(model.named_modules())
    acc = _Hessians()
    hooks = []
    for name in names:
        key = _alias(name, names)
        if key == name:
            hooks.append(modules[name].register_forward_pre_hook(
                lambda _module, args, key=key: acc.feed(key, args[0])))
    try:
        yield acc
    finally:
        for h in hooks:
            h.remove()

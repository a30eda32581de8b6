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
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError

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
    """H = Σ xxᵀ over every token of `batches` for the input of each named Linear.

    Linears reading the same tensor (q/k/v, gate/up) share one matrix (the same array
    object, so work derived from it, like GPTQ's inverse, is done once: see gptq.Factors).
    """
    import torch

    modules = dict(model.named_modules())
    hessians: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    alias: dict[str, str] = {}
    hooks = []
    head_hook = None
    for name in names:
        key = name.replace("k_proj", "q_proj").replace("v_proj", "q_proj").replace("up_proj", "gate_proj")
        alias[name] = key
        if key != name and key in names:
            continue

        def hook(_module, args, key=key):
            # float32 within a window (BLAS-fast), float64 across windows
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            h = (x.T @ x).to(torch.float64)
            hessians[key] = hessians[key] + h if key in hessians else h
            counts[key] = counts.get(key, 0) + x.shape[0]

        if name == "lm_head" and hasattr(model, "model"):
            # The LM head's input is the base model's (normed) last hidden state: fed to this
            # hook below, which skips the 262k-wide logits of every calibration token.
            head_hook = hook
            continue
        hooks.append(modules[name].register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for batch in batches:
                if head_hook:
                    out = model.model(input_ids=torch.tensor([batch]), use_cache=False)
                    head_hook(None, (out.last_hidden_state,))
                else:
                    model(input_ids=torch.tensor([batch]), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    shared = {key: (h / counts[key]).numpy() for key, h in hessians.items()}
    return {name: shared[alias[name]] for name in names}  # aliases share one array

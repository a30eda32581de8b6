"""Parity metrics between an artifact's logits and the reference's.

Definitions follow llama.cpp's `--kl-divergence` report so figures compare with what
the community reads. This module starts with what the reference checks need
(per-token negative log-likelihood and perplexity); the verification stage adds KLD,
top-1 agreement and Δp here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64; stable for very large logits and -inf entries."""
    x = np.asarray(logits, dtype=np.float64)
    peak = np.max(x, axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    shifted = x - peak
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def token_nll(logits: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """NLL of each next token: logits[i] predicts token_ids[i + 1]; returns len(ids) - 1 values."""
    ids = np.asarray(token_ids)
    if logits.shape[0] != ids.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows for {ids.shape[0]} tokens")
    logp = log_softmax(logits[:-1])
    return -logp[np.arange(len(ids) - 1), ids[1:]]


def perplexity(logits: np.ndarray, token_ids: Sequence[int]) -> float:
    return float(np.exp(np.mean(token_nll(logits, token_ids))))

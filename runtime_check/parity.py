"""Parity metrics between an artifact's logits and the reference's, per token.

Definitions follow llama.cpp's `--kl-divergence` report so figures compare with what
the community reads:
- KLD(t) = sum_v p_ref(v) (log p_ref(v) - log p_art(v)), natural log, per position;
  reported as mean, median, p99, max.
- top-1 agreement: share of positions where both argmaxes agree ("Same top p").
- Δp: p_art - p_ref of one token per position; `delta_p_top` takes the reference's
  top token, `delta_p_next` the actual next token of the text (llama.cpp's Δp);
  each with its mean and RMS.
- PPL over the text for both, and their ratio PPL(artifact) / PPL(reference).
- max |Δlogit|: the float-path check (meaningful when no quantization is involved).
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


def kl_divergence(ref_logits: np.ndarray, art_logits: np.ndarray) -> np.ndarray:
    """KL(p_ref || p_art) per row, in nats. Terms with p_ref = 0 contribute 0."""
    return _kl_from_log_probs(log_softmax(ref_logits), log_softmax(art_logits))


def _kl_from_log_probs(lp_ref: np.ndarray, lp_art: np.ndarray) -> np.ndarray:
    p_ref = np.exp(lp_ref)
    with np.errstate(invalid="ignore"):
        terms = np.where(p_ref > 0, p_ref * (lp_ref - lp_art), 0.0)
    return np.maximum(terms.sum(axis=-1), 0.0)  # clamp -1e-17 round-off to 0


def parity_metrics(ref_logits: np.ndarray, art_logits: np.ndarray,
                   token_ids: Sequence[int], *, chunk: int = 32) -> dict[str, float | int | list[float]]:
    """Every per-token metric over one teacher-forced text (rows align with token_ids).

    Rows are processed `chunk` at a time in float64: a 512 x 262k-vocab text would
    otherwise need several GB of float64 temporaries.
    """
    if ref_logits.shape != art_logits.shape:
        raise ValueError(f"logit shapes differ: reference {ref_logits.shape}, "
                         f"artifact {art_logits.shape}")
    ids = np.asarray(token_ids)
    n = ref_logits.shape[0]
    kld, dp_top, dp_next = np.empty(n), np.empty(n), np.empty(max(n - 1, 0))
    nll_ref, nll_art = np.empty(max(n - 1, 0)), np.empty(max(n - 1, 0))
    agree, max_delta, nonfinite = 0, 0.0, 0
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        ref = np.asarray(ref_logits[lo:hi], dtype=np.float64)
        art = np.asarray(art_logits[lo:hi], dtype=np.float64)
        lp_ref, lp_art = log_softmax(ref), log_softmax(art)
        p_ref, p_art = np.exp(lp_ref), np.exp(lp_art)
        kld[lo:hi] = _kl_from_log_probs(lp_ref, lp_art)
        rows = np.arange(hi - lo)
        top = ref.argmax(-1)
        agree += int((art.argmax(-1) == top).sum())
        dp_top[lo:hi] = p_art[rows, top] - p_ref[rows, top]
        nxt = rows[: max(0, min(hi, n - 1) - lo)]  # rows that have a next token
        targets = ids[lo + nxt + 1]
        dp_next[lo:lo + nxt.size] = p_art[nxt, targets] - p_ref[nxt, targets]
        nll_ref[lo:lo + nxt.size] = -lp_ref[nxt, targets]
        nll_art[lo:lo + nxt.size] = -lp_art[nxt, targets]
        broken = ~np.isfinite(art)
        nonfinite += int(broken.sum())
        finite = np.isfinite(ref) & ~broken
        if finite.any():
            max_delta = max(max_delta, float(np.abs(ref - art)[finite].max()))
    ppl_ref, ppl_art = float(np.exp(nll_ref.mean())), float(np.exp(nll_art.mean()))
    return {
        "tokens": int(n),
        "kld_mean": float(kld.mean()),
        "kld_median": float(np.median(kld)),
        "kld_p99": float(np.percentile(kld, 99)),
        "kld_max": float(kld.max()),
        "top1_agreement": agree / n,
        "delta_p_top_mean": float(dp_top.mean()),
        "delta_p_top_rms": float(np.sqrt(np.mean(dp_top**2))),
        "delta_p_next_mean": float(dp_next.mean()) if dp_next.size else 0.0,
        "delta_p_next_rms": float(np.sqrt(np.mean(dp_next**2))) if dp_next.size else 0.0,
        "ppl_reference": ppl_ref,
        "ppl_artifact": ppl_art,
        "ppl_ratio": ppl_art / ppl_ref,
        # a NaN or Inf logit is no small difference: it fails every gate (gates.py)
        "max_abs_delta_logit": max_delta if not nonfinite else float("inf"),
        "nonfinite_logits": nonfinite,
        "kld_per_position": [float(f"{k:.4g}") for k in kld],
    }


def greedy_match_length(expected: Sequence[int], got: Sequence[int]) -> int:
    """How many leading generated tokens agree."""
    n = 0
    for a, b in zip(expected, got, strict=False):
        if a != b:
            break
        n += 1
    return n

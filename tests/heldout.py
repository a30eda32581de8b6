"""Parity of a real-model artifact over every held-out token we ship, pooled over windows,
with the standard error that tells whether a number is clear of its gate."""

import json
import math
from importlib import resources

WINDOWS = ("builtin:gemma_edge_field_notes+austen_pride_and_prejudice_ch1",
           "builtin:apache_license_2_0")
PREFILL, DECODE_STEPS = 128, 16  # prefill, a few decode steps on its cache, prefill the rest


def teacher_forced(runner, ids):
    from runtime_check.runner import teacher_forced_logits

    return teacher_forced_logits(runner, ids, PREFILL, DECODE_STEPS)


def pooled_metrics(runner, windows) -> dict:
    """Mean KLD and top-1 agreement over all windows' tokens, and top-1's binomial s.e."""
    from runtime_check.parity import parity_metrics

    n = kld = agree = 0
    for ids, reference in windows:
        m = parity_metrics(reference, teacher_forced(runner, ids), ids)
        n += len(ids)
        kld += m["kld_mean"] * len(ids)
        agree += round(m["top1_agreement"] * len(ids))
    runner.close()
    top1 = agree / n
    return {"tokens": n, "kld_mean": kld / n, "top1_agreement": top1,
            "top1_se": math.sqrt(top1 * (1 - top1) / n)}


def int8_gates() -> dict:
    """The shipped int8 gates, by metric: {"kld_mean": {"max": ...}, "top1_agreement": ...}."""
    data = json.loads((resources.files("runtime_check") / "gates" / "default.json").read_text())
    return {g["metric"]: g for g in data["int8"]["gates"]}

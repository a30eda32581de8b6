import math

import numpy as np
import pytest

from runtime_check.parity import (
    greedy_match_length,
    kl_divergence,
    log_softmax,
    parity_metrics,
    perplexity,
    token_nll,
)


def test_identical_distributions_give_exact_zero():
    logits = np.random.default_rng(0).normal(size=(7, 50)) * 10
    m = parity_metrics(logits, logits.copy(), list(range(7)))
    assert m["kld_mean"] == 0.0 and m["kld_max"] == 0.0
    assert m["top1_agreement"] == 1.0
    assert m["delta_p_top_rms"] == 0.0 and m["delta_p_next_rms"] == 0.0
    assert m["ppl_ratio"] == 1.0 and m["max_abs_delta_logit"] == 0.0


def test_kld_by_hand_two_tokens():
    # p = [0.5, 0.5], q = [0.25, 0.75]: KL = 0.5 ln 2 + 0.5 ln(2/3)
    ref = np.log(np.array([[0.5, 0.5]]))
    art = np.log(np.array([[0.25, 0.75]]))
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert kl_divergence(ref, art)[0] == pytest.approx(expected, abs=1e-12)
    assert kl_divergence(ref, art)[0] == pytest.approx(0.1438410362, abs=1e-9)


def test_kld_is_shift_invariant_and_handles_huge_logits():
    ref = np.array([[1e6, 1e6 - 1.0, -1e6]])
    art = ref + 12345.0  # same distribution
    assert kl_divergence(ref, art)[0] == pytest.approx(0.0, abs=1e-12)
    ls = log_softmax(ref)
    assert np.isfinite(ls[0, :2]).all()
    assert np.exp(ls).sum() == pytest.approx(1.0)


def test_neg_inf_logits():
    ref = np.array([[0.0, -np.inf, 0.0]])
    same = np.array([[0.0, -np.inf, 0.0]])
    assert kl_divergence(ref, same)[0] == 0.0  # 0 * log(0/0) terms count as 0
    art = np.array([[0.0, 0.0, 0.0]])  # artifact puts mass where the reference has none
    assert kl_divergence(ref, art)[0] == pytest.approx(math.log(3 / 2), abs=1e-12)
    missing = np.array([[0.0, 0.0, -np.inf]])  # artifact has zero where the reference has mass
    assert kl_divergence(ref, missing)[0] == np.inf


def test_top1_and_delta_p_by_hand():
    ref = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]))
    art = np.log(np.array([[0.5, 0.4, 0.1], [0.6, 0.3, 0.1]]))
    m = parity_metrics(ref, art, [0, 1])
    assert m["top1_agreement"] == 0.5
    # reference top tokens: 0 then 1; Δp = 0.5-0.6, 0.3-0.7
    assert m["delta_p_top_mean"] == pytest.approx((-0.1 - 0.4) / 2)
    assert m["delta_p_top_rms"] == pytest.approx(math.sqrt((0.01 + 0.16) / 2))
    # next token after position 0 is id 1: Δp = 0.4 - 0.3
    assert m["delta_p_next_mean"] == pytest.approx(0.1)


def test_perplexity_by_hand():
    # tokens [0, 1, 2]: position 0 predicts 1 with p=0.5, position 1 predicts 2 with p=0.25
    logits = np.log(np.array([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]))
    nll = token_nll(logits, [0, 1, 2])
    assert nll == pytest.approx([math.log(2), math.log(4)])
    assert perplexity(logits, [0, 1, 2]) == pytest.approx(math.sqrt(8))


def test_ppl_ratio_and_max_delta():
    ref = np.log(np.array([[0.5, 0.5], [0.5, 0.5]]))
    art = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
    m = parity_metrics(ref, art, [0, 1])
    assert m["ppl_reference"] == pytest.approx(2.0)
    assert m["ppl_artifact"] == pytest.approx(1 / 0.75)
    assert m["ppl_ratio"] == pytest.approx((1 / 0.75) / 2.0)
    assert m["max_abs_delta_logit"] == pytest.approx(math.log(2))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        parity_metrics(np.zeros((2, 3)), np.zeros((2, 4)), [0, 1])


def test_greedy_match_length():
    assert greedy_match_length([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert greedy_match_length([1, 2], [1, 2]) == 2
    assert greedy_match_length([], [1]) == 0


def test_chunked_metrics_equal_one_chunk():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(37, 40)) * 5
    art = ref + rng.normal(size=(37, 40)) * 0.3
    ids = list(rng.integers(0, 40, size=37))
    whole = parity_metrics(ref, art, ids, chunk=1000)
    for size in (1, 5, 32):
        part = parity_metrics(ref, art, ids, chunk=size)
        for key, value in whole.items():
            assert part[key] == pytest.approx(value, rel=1e-12, abs=1e-15), (size, key)
    assert whole["ppl_reference"] == pytest.approx(perplexity(ref, ids))
    assert whole["kld_mean"] == pytest.approx(kl_divergence(ref, art).mean())

import numpy as np
import pytest

from runtime_check.runner import Runner, greedy_generate, teacher_forced_logits
from runtime_check.torch_runner import TorchRunner, full_forward_logits
from tests.conftest import FAMILY_NAMES

TEXT = "The quick brown fox jumps over the lazy dog, again and again."


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("prefill_len", [1, 4, 20])
def test_prefill_then_decode_equals_full_forward(tiny, name, prefill_len):
    ref = tiny(name)
    ids = ref.encode(TEXT)
    window = getattr(ref.config, "sliding_window", None)
    if window:  # the decode steps must run past the sliding window
        assert len(ids) - prefill_len > 2 * window or prefill_len > window
    runner = TorchRunner(ref.model)
    assert isinstance(runner, Runner)
    cached = teacher_forced_logits(runner, ids, prefill_len)
    full = full_forward_logits(ref.model, ids)
    assert cached.shape == (len(ids), ref.config.vocab_size)
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_prefill_in_chunks_equals_one_prefill(tiny, name):
    ref = tiny(name)
    ids = ref.encode(TEXT)
    runner = TorchRunner(ref.model)
    runner.reset()
    chunks = [runner.prefill(ids[i:i + 7]) for i in range(0, len(ids), 7)]
    np.testing.assert_allclose(np.concatenate(chunks), full_forward_logits(ref.model, ids),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_greedy_generation_is_the_argmax_chain_of_full_forwards(tiny, name):
    ref = tiny(name)
    prompt = ref.encode("Once upon a time")
    runner = TorchRunner(ref.model)
    got = list(greedy_generate(runner, prompt, 12))
    expect, seq = [], list(prompt)
    for _ in range(12):
        nxt = int(np.argmax(full_forward_logits(ref.model, seq)[-1]))
        expect.append(nxt)
        seq.append(nxt)
    assert got == expect
    assert list(greedy_generate(runner, prompt, 12)) == got, "reset must forget the sequence"


def test_greedy_stops_at_a_stop_token(tiny):
    ref = tiny("gemma")
    runner = TorchRunner(ref.model)
    free = list(greedy_generate(runner, ref.encode("abc"), 8))
    stop = free[3]
    stopped = list(greedy_generate(runner, ref.encode("abc"), 8, stop_ids=[stop]))
    assert stopped == free[: free.index(stop) + 1]


def test_prefill_rejects_empty(tiny):
    runner = TorchRunner(tiny("gemma").model)
    with pytest.raises(ValueError):
        runner.prefill([])

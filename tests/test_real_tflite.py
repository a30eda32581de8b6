"""The 270M through LiteRT: fp32 parity with the torch reference, before and past the window.

Measured here (2 threads): max |Δlogit| 1.8e-4 (256 prefill + 64 decode) and 2.1e-4
(448 + 100, crossing the 512-token window); top-1 identical at every position.
"""

import pytest

from runtime_check.litert_runner import LiteRTRunner
from tests.runner_checks import assert_greedy_matches, assert_teacher_forced_parity

pytestmark = pytest.mark.real


def test_real_tflite_export_manifest(real_tflite):
    out, manifest = real_tflite
    size = manifest["files"]["model.tflite"]["bytes"]
    assert 1.0e9 < size < 1.1e9, "fp32 weights once, shared by all four signatures"
    assert set(manifest["graph"]["signatures"]) == {"decode", "prefill_32", "prefill_128",
                                                    "prefill_512"}
    print(f"270M TFLite export: {manifest['wall_seconds']:.1f} s, "
          f"peak RSS {manifest['peak_rss_bytes'] / 2**30:.2f} GiB, {size / 2**20:.0f} MiB")


@pytest.mark.parametrize("prefill,decode", [(256, 64), (448, 100)])
def test_real_tflite_parity(real_ref, real_tflite, real_heldout_ids, prefill, decode):
    ids = real_heldout_ids[: prefill + decode]
    assert len(ids) == prefill + decode
    assert_teacher_forced_parity(LiteRTRunner(real_tflite[0], threads=2), real_ref.model, ids,
                                 prefill, atol=1e-3)


def test_real_tflite_greedy_64_tokens_identical(real_ref, real_tflite):
    runner = LiteRTRunner(real_tflite[0], threads=2)
    for prompt in ("The capital of France is", "def fibonacci(n):"):
        assert_greedy_matches(runner, real_ref.model, real_ref.encode(prompt), 64)

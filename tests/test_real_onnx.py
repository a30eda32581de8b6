"""The 270M through ONNX: fp32 parity with the torch reference, before and past the window.

Measured here (2 threads): max |Δlogit| 5.1e-5 (256 prefill + 64 decode) and 7.0e-5
(448 + 100, crossing the 512-token window). The fp32 noise floor of this model is
about 1e-4: its residual stream reaches ~1e5, and torch's own cached and uncached
paths differ by 9e-5.
"""

import pytest

from runtime_check.onnx_runner import OnnxRunner
from tests.runner_checks import assert_greedy_matches, assert_teacher_forced_parity

pytestmark = pytest.mark.real


def test_real_onnx_export_manifest(real_onnx):
    out, manifest = real_onnx
    data = manifest["files"]["model.onnx.data"]["bytes"]
    assert 1.0e9 < data < 1.1e9, "fp32 weights once (tied embedding not duplicated)"
    assert manifest["graph"]["num_layers"] == 18 and manifest["graph"]["sliding_window"] == 512
    print(f"270M ONNX export: {manifest['wall_seconds']:.1f} s, "
          f"peak RSS {manifest['peak_rss_bytes'] / 2**30:.2f} GiB, {data / 2**20:.0f} MiB data")


@pytest.mark.parametrize("prefill,decode", [(256, 64), (448, 100)])
def test_real_onnx_parity(real_ref, real_onnx, real_heldout_ids, prefill, decode):
    ids = real_heldout_ids[: prefill + decode]
    assert len(ids) == prefill + decode
    # fp32 summation order (onnxruntime's MLAS vs torch) moves logits by 5e-5..8.8e-5 across
    # the machines and days measured (2026-11-27: 5e-5..8e-5; 2026-12-02: 8.77e-5), so 1e-4
    # sat within that spread; 2e-4 is 2.3x the largest seen, still 5x below the fp32 gate
    # (1e-3), and the argmax equality below has 70x margin (smallest top-2 gap 0.0061)
    assert_teacher_forced_parity(OnnxRunner(real_onnx[0], threads=2), real_ref.model, ids,
                                 prefill, atol=2e-4)


def test_real_onnx_greedy_64_tokens_identical(real_ref, real_onnx):
    runner = OnnxRunner(real_onnx[0], threads=2)
    for prompt in ("The capital of France is", "def fibonacci(n):"):
        assert_greedy_matches(runner, real_ref.model, real_ref.encode(prompt), 64)

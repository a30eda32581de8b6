"""Quantization on the real Gemma 3 270M: what only a trained model shows.

Measured on this machine (ONNX, 512 held-out tokens, 2026-11-27): int8 (RTN, block 32) KLD
0.00063, top-1 98.4 %; int8-calibrated KLD 0.00044, top-1 98.2 %; int4-block32 (RTN) KLD 0.42;
int4-calibrated (GPTQ) KLD 0.24 at the same size. The int8 gates are asserted over every
held-out token we ship (tests/heldout.py), where their top-1 margin is several standard errors.
"""

import pytest

from tests.conftest import quantize_real
from tests.heldout import int8_gates, pooled_metrics

pytestmark = pytest.mark.real

# prefill 128, decode 16 (the decode path and its cache), prefill the rest: one ONNX graph
# serves both, and the float-activation int8 artifacts decode at ~1 tok/s (decoding all
# 384 tokens cost 380-420 s per artifact)
DECODE_STEPS = 16


@pytest.fixture(scope="module")
def quantized(real_onnx):
    return quantize_real(real_onnx[0], ["int8", "int8-calibrated", "int8-dynamic",
                                        "int4-block32", "int4-calibrated", "int4-head-calibrated"])


@pytest.fixture(scope="module")
def reference_logits(real_ref, real_heldout_ids):
    from runtime_check.runner import teacher_forced_logits
    from runtime_check.torch_runner import TorchRunner

    ids = real_heldout_ids[:512]
    return ids, teacher_forced_logits(TorchRunner(real_ref.model, threads=2), ids, 128, DECODE_STEPS)


def _metrics(artifact, reference_logits):
    from runtime_check.onnx_runner import OnnxRunner
    from runtime_check.parity import parity_metrics
    from runtime_check.runner import teacher_forced_logits

    ids, base = reference_logits
    runner = OnnxRunner(artifact, threads=2)
    got = teacher_forced_logits(runner, ids, 128, DECODE_STEPS)
    runner.close()
    return parity_metrics(base, got, ids)


@pytest.mark.parametrize("recipe", ["int8", "int8-calibrated"])
def test_int8_weight_only_meets_the_int8_targets(quantized, real_reference_windows, recipe):
    from runtime_check.onnx_runner import OnnxRunner

    m = pooled_metrics(OnnxRunner(quantized[recipe], threads=2), real_reference_windows)
    print(f"\nonnx-{recipe}: {m['tokens']} tokens, KLD {m['kld_mean']:.5f}, "
          f"top-1 {m['top1_agreement']:.2%} (s.e. {m['top1_se']:.2%})")
    gates = int8_gates()
    assert m["tokens"] >= 1700
    assert m["kld_mean"] <= gates["kld_mean"]["max"] and \
        m["top1_agreement"] >= gates["top1_agreement"]["min"], m


def test_calibrated_int4_beats_round_to_nearest_at_the_same_size(quantized, reference_logits):
    rtn = _metrics(quantized["int4-block32"], reference_logits)["kld_mean"]
    gptq = _metrics(quantized["int4-calibrated"], reference_logits)["kld_mean"]
    size = {k: sum(p.stat().st_size for p in quantized[k].glob("model.onnx*"))
            for k in ("int4-block32", "int4-calibrated")}
    assert size["int4-calibrated"] <= size["int4-block32"]
    assert gptq <= 0.8 * rtn, (rtn, gptq)
    assert size["int4-calibrated"] < 240 * 2**20  # int4 body, int8 head: ~226 MiB


def test_shipped_int4_meets_the_int4_target_within_230_mib(quantized, real_reference_windows,
                                                          reference_logits):
    """int4-head-calibrated (head int4 block 16, body int8 block 32): where the measured
    sensitivity spends the 230 MiB. Target: mean KLD <= 0.10 and top-1 >= 85 % (2026-12-03,
    512 tokens: 229 MiB, KLD 0.042, top-1 87.3 %; int4-calibrated, the body at 4 bits: 226 MiB,
    0.11, 82.4 %). Top-1 is held within two standard errors of 85 % over every held-out token,
    as the int8-dynamic gate is."""
    from runtime_check.onnx_runner import OnnxRunner

    head = quantized["int4-head-calibrated"]
    assert sum(p.stat().st_size for p in head.glob("model.onnx*")) <= 230 * 2**20
    m = pooled_metrics(OnnxRunner(head, threads=2), real_reference_windows)
    print(f"\nonnx-int4-head-calibrated: {m['tokens']} tokens, KLD {m['kld_mean']:.4f}, "
          f"top-1 {m['top1_agreement']:.2%} (s.e. {m['top1_se']:.2%})")
    assert m["tokens"] >= 1700
    assert m["kld_mean"] <= 0.10, m
    assert m["top1_agreement"] + 2 * m["top1_se"] >= 0.85, m
    # the bytes are better spent on the body than on the head: 2.5x closer than int4-calibrated
    body4 = _metrics(quantized["int4-calibrated"], reference_logits)["kld_mean"]
    assert _metrics(head, reference_logits)["kld_mean"] <= 0.6 * body4


def test_int4_bundle_runs_in_onnxruntime_genai_like_onnxruntime(quantized, real_ref, tmp_path):
    from exporter.package import package
    from runtime_check.engines import open_engine
    from runtime_check.onnx_runner import OnnxRunner
    from runtime_check.runner import greedy_generate

    out = tmp_path / "bundle"
    package(quantized["int4-calibrated"], out, "onnx-bundle")
    engine = open_engine(out, threads=2)
    prompt = "The capital of France is"
    got = "".join(engine.generate(prompt, 24))
    engine.close()
    ids = list(greedy_generate(OnnxRunner(quantized["int4-calibrated"], threads=2),
                               real_ref.encode(prompt), 24, stop_ids=real_ref.stop_token_ids))
    assert got == real_ref.tokenizer.decode(ids, skip_special_tokens=True)
    # and it is the model's text: the fp32 reference's own greedy continuation (" the capital
    # of the country of France. It is ...", no "Paris"), as far as the reference decides
    # clearly (top-2 logits >= 0.5 apart; int4 may part ways at a closer call)
    want = _clear_greedy_prefix(real_ref, prompt, 24, margin=0.5)
    assert len(want) >= 3 and got.startswith(real_ref.tokenizer.decode(want)), (got, want)


def test_shipped_int4_bundle_runs_in_onnxruntime_genai_as_in_onnxruntime(quantized, real_ref,
                                                                         tmp_path):
    """The int4 a build ships (int4-head-calibrated) in onnxruntime-genai: its greedy tokens
    are onnxruntime's on the same artifact. (Against the fp32 reference its greedy parts at
    the int4 error: 2026-12-03, "The capital of France is" -> " a city" where the reference
    says " the capital", 0.54 logits apart; see docs/results.md.)"""
    from exporter.package import package
    from tests.runner_checks import assert_engine_follows_artifact

    out = tmp_path / "int4.onnx-bundle"
    package(quantized["int4-head-calibrated"], out, "onnx-bundle")
    assert_engine_follows_artifact(quantized["int4-head-calibrated"], out, real_ref)


def test_shipped_int8_bundle_keeps_the_reference_greedy_in_onnxruntime_genai(quantized, real_ref,
                                                                            tmp_path):
    """The int8 a build ships as an ONNX bundle (int8-dynamic), run by onnxruntime-genai:
    every check prompt's greedy continuation equals the fp32 reference's up to the
    reference's first near-tie (`gemma-edge check PACKAGE`)."""
    from tests.runner_checks import assert_package_keeps_greedy

    result = assert_package_keeps_greedy(quantized["int8-dynamic"], "onnx-bundle", real_ref,
                                         tmp_path / "int8-dynamic.onnx-bundle")
    assert result["engine"] == "onnxruntime-genai"


def _clear_greedy_prefix(ref, prompt: str, steps: int, *, margin: float) -> list[int]:
    """The reference's greedy tokens up to the first whose top-2 logits are < margin apart."""
    import torch

    ids = ref.encode(prompt)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            top = torch.topk(ref.model(input_ids=torch.tensor([ids + out])).logits[0, -1], 2)
            if float(top.values[0] - top.values[1]) < margin:
                break
            out.append(int(top.indices[0]))
    return out

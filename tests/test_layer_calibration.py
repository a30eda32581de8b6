"""Calibration one decoder layer at a time gives the Hessians (and so the codes) of the
all-at-once pass, for every text family and for the rotated model LiteRT quantizes."""

import numpy as np
import pytest

from quantization.recipes import RECIPES


def _streamed(model, batches, names):
    from quantization.layer_calibration import layer_hessians

    merged = {}
    for group in layer_hessians(model, batches, names):
        assert not set(group) & set(merged), "a Linear came twice"
        merged.update(group)
    return merged


def _assert_same(streamed, whole):
    assert list(streamed) == list(whole) or set(streamed) == set(whole)
    for name, h in whole.items():
        np.testing.assert_allclose(streamed[name], h, rtol=1e-6, atol=1e-9 * np.abs(h).max())


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3_text"])
def test_layer_by_layer_hessians_equal_the_one_pass(tiny, family):
    from quantization.calibration import calibration_batches, collect_hessians
    from quantization.layer_calibration import streamable
    from quantization.weights import linear_names

    ref = tiny(family)
    batches = calibration_batches(ref, tokens=512, seq_len=128)
    names = linear_names(ref.model)
    assert streamable(ref.model, names)
    streamed = _streamed(ref.model, batches, names)
    _assert_same(streamed, collect_hessians(ref.model, batches, names))
    q = "model.layers.1.self_attn.q_proj"
    assert streamed[q] is streamed[q.replace("q_proj", "k_proj")]  # shared, as in the one pass


def test_rotated_model_streams_the_same(tiny):
    """LiteRT's rotated copy applies its rotations through hooks inside the layers, the
    final norm and the embedding: a layer run alone must apply them too."""
    from foundation.rotation import rotated_copy
    from quantization.calibration import calibration_batches, collect_hessians
    from quantization.weights import linear_names

    ref = tiny("gemma3_text")
    model, _rot = rotated_copy(ref.model)
    batches = calibration_batches(ref, tokens=256, seq_len=128)
    names = linear_names(model)
    _assert_same(_streamed(model, batches, names), collect_hessians(model, batches, names))


def test_streamed_quantization_decides_the_same_codes(tiny):
    """A GPTQ recipe streamed gives the codes, scales and output errors of the all-at-once
    path; the streamed run keeps no Hessians in the model's memo, only the small capture."""
    import dataclasses

    from quantization.weights import quantize_weights

    ref = tiny("gemma2")
    whole_ref = dataclasses.replace(ref, memo={})
    stream_ref = dataclasses.replace(ref, memo={})
    recipe = RECIPES["int4-calibrated"]
    whole = quantize_weights(whole_ref, recipe, "onnx", progress=False, calibration_tokens=256,
                             stream_layers=False)
    streamed = quantize_weights(stream_ref, recipe, "onnx", progress=False,
                                calibration_tokens=256, stream_layers=True)
    assert list(streamed) == list(whole)
    for name, qw in whole.items():
        other = streamed[name]
        np.testing.assert_array_equal(other.codes, qw.codes, err_msg=name)
        np.testing.assert_array_equal(other.scales, qw.scales, err_msg=name)
        assert other.output_error == pytest.approx(qw.output_error, rel=1e-5)
    assert "calibration" not in stream_ref.memo
    windows, (inputs, calls) = next(iter(stream_ref.memo["calibration-capture"].values()))
    assert len(inputs) == len(windows) and len(calls) == ref.config.num_hidden_layers


def test_budget_decides_when_to_stream(tiny, monkeypatch):
    """Past the byte budget quantize_weights streams by itself."""
    import dataclasses

    import quantization.weights as weights
    from quantization.layer_calibration import hessian_bytes

    ref = dataclasses.replace(tiny("gemma3_text"), memo={})
    names = weights.linear_names(ref.model)
    k = ref.config.hidden_size
    assert hessian_bytes(ref.model, names) >= 8 * k * k
    monkeypatch.setattr(weights, "HESSIAN_BUDGET", 1)
    weights.quantize_weights(ref, RECIPES["int8-calibrated"], "tflite", progress=False,
                             calibration_tokens=256)
    assert "calibration-capture" in ref.memo and "calibration" not in ref.memo

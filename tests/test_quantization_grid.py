"""The integer grids, calibrated rounding and the ONNX packing, on fixed small matrices."""

import numpy as np
import pytest

from quantization.gptq import gptq_quantize, output_error
from quantization.grid import dequantize, grid_for, quantize_rtn


def _layer(seed=0, n=96, k=256, tokens=2048):
    """A weight and the Hessian of correlated inputs with a few outlier channels (like Gemma's)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((tokens, k))
    x[:, :4] *= 25.0
    x = x @ (np.eye(k) + 0.4 * rng.standard_normal((k, k)) / np.sqrt(k))
    return w, x.T @ x / tokens


@pytest.mark.parametrize("fmt,bits,block", [("tflite", 8, 0), ("tflite", 4, 32),
                                            ("onnx", 8, 128), ("onnx", 4, 32), ("onnx", 4, 64)])
def test_rtn_codes_lie_on_the_runtime_grid(fmt, bits, block):
    w, _ = _layer()
    grid = grid_for(fmt, bits, block)
    codes, scales = quantize_rtn(w, grid)
    assert codes.min() >= grid.signed_min and codes.max() <= grid.qmax
    assert scales.shape == (w.shape[0], 1 if block == 0 else w.shape[1] // block)
    step = np.repeat(scales, w.shape[1] // scales.shape[1], axis=1)
    assert np.all(np.abs(dequantize(codes, scales) - w) <= step / 2 + 1e-6)


def test_litert_blockwise_scales_are_rounded_like_ai_edge_quantizer():
    import ml_dtypes

    w, _ = _layer()
    _, scales = quantize_rtn(w, grid_for("tflite", 4, 32))
    rounded = scales.astype(ml_dtypes.bfloat16).astype(np.float16).astype(np.float32)
    assert np.array_equal(scales, rounded)
    _, channel = quantize_rtn(w, grid_for("tflite", 8, 0))
    assert not np.array_equal(channel, channel.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_grids_match_each_runtime_range():
    assert grid_for("tflite", 8, 0).signed_min == -127  # narrow range for 8 bits
    assert grid_for("tflite", 4, 32).signed_min == -8
    assert grid_for("onnx", 4, 32).signed_min == -8  # implicit zero point 8
    assert grid_for("onnx", 8, 128).signed_min == -128
    with pytest.raises(ValueError):
        grid_for("coreml", 4, 32)


@pytest.mark.parametrize("fmt,bits,block", [("tflite", 4, 32), ("onnx", 4, 32), ("tflite", 8, 0)])
def test_calibrated_rounding_lowers_layer_output_error(fmt, bits, block):
    w, h = _layer()
    grid = grid_for(fmt, bits, block)
    rtn = output_error(w, *quantize_rtn(w, grid), h)
    gptq = output_error(w, *gptq_quantize(w, h, grid), h)
    assert gptq < 0.6 * rtn, (rtn, gptq)


@pytest.mark.parametrize("fmt,bits,block", [("tflite", 4, 32), ("tflite", 8, 0), ("onnx", 4, 32)])
def test_calibrated_codes_survive_requantization(fmt, bits, block):
    """A runtime quantizer that recomputes scales from the snapped weight gets our codes back."""
    w, h = _layer(seed=1)
    grid = grid_for(fmt, bits, block)
    codes, scales = gptq_quantize(w, h, grid)
    again, scales2 = quantize_rtn(dequantize(codes, scales), grid)
    assert np.array_equal(again, codes)
    np.testing.assert_allclose(scales2, scales, rtol=1e-6)


def test_output_error_is_zero_for_exact_weights_and_scale_free():
    w, h = _layer(n=8, k=64)
    codes, scales = quantize_rtn(w, grid_for("onnx", 8, 32))
    exact = dequantize(codes, scales)
    assert output_error(exact, codes, scales, h) == pytest.approx(0.0, abs=1e-12)
    assert output_error(w, codes, scales, h) == pytest.approx(  # float32 products
        output_error(3 * w, codes, 3 * scales, h), rel=1e-5)


def test_onnx_packing_is_low_nibble_first():
    from quantization.onnx_backend import pack_codes
    from quantization.weights import QuantizedWeight

    codes = np.array([[-8, 7, 0, 1] * 8], dtype=np.int8)  # one row, K = 32
    qw = QuantizedWeight("x", grid_for("onnx", 4, 32), codes, np.ones((1, 1), np.float32),
                         "rtn", "")
    packed = pack_codes(qw)
    assert packed.shape == (1, 1, 16) and packed.dtype == np.uint8
    assert packed[0, 0, 0] == (0 | (15 << 4)) and packed[0, 0, 1] == (8 | (9 << 4))
    qw8 = QuantizedWeight("x", grid_for("onnx", 8, 32), codes, np.ones((1, 1), np.float32),
                          "rtn", "")
    assert pack_codes(qw8)[0, 0, :4].tolist() == [120, 135, 128, 129]  # zero point 128


def test_gptq_factors_computed_once_give_the_same_codes():
    """Weights reading one input (q/k/v) and recipes of one build reuse one Hessian's factors."""
    from quantization.gptq import gptq_factors

    w, h = _layer(seed=2)
    factors = gptq_factors(h)
    for grid in (grid_for("onnx", 4, 32), grid_for("tflite", 8, 0)):
        fresh = gptq_quantize(w, h, grid)
        shared = gptq_quantize(w, None, grid, factors=factors)
        assert np.array_equal(fresh[0], shared[0]) and np.array_equal(fresh[1], shared[1])


def test_output_error_of_a_tall_weight_is_estimated_on_strided_rows():
    """The 262k-row LM head's diagnostic runs on a strided subset of rows: same estimate."""
    w, h = _layer(n=8192, k=64, seed=3)
    codes, scales = quantize_rtn(w, grid_for("onnx", 4, 32))
    full = output_error(w, codes, scales, h, max_rows=8192)
    sampled = output_error(w, codes, scales, h, max_rows=2048)
    assert sampled != full and sampled == pytest.approx(full, rel=0.1)


def test_rtn_in_row_chunks_gives_the_same_codes(monkeypatch):
    """quantize_rtn and block_scales keep their float temporaries to one row chunk (a 4B
    model's head would need ~2.7 GB per temporary): the codes and scales do not change."""
    import numpy as np

    from quantization import grid as grid_module
    from quantization.weights import grid_for

    w = np.random.default_rng(0).standard_normal((300, 256)).astype(np.float32) * 0.02
    for g in (grid_for("onnx", 8, 32), grid_for("onnx", 4, 32), grid_for("tflite", 8, 0)):
        whole = grid_module.quantize_rtn(w, g)
        monkeypatch.setattr(grid_module, "ROW_CHUNK", 256 * 7)  # 7 rows: a ragged last chunk
        chunked = grid_module.quantize_rtn(w, g)
        monkeypatch.undo()
        np.testing.assert_array_equal(chunked[0], whole[0])
        np.testing.assert_array_equal(chunked[1], whole[1])

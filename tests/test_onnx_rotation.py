"""export --format onnx --rotate: the LiteRT export's rotations (foundation/rotation.py) in
the ONNX graph.

Float: the rotated ONNX export equals torch (prefill and decode, past the sliding window),
the folded rotations change the weights, and the online ones are small float MatMuls.
Quantized: codes are decided on the rotated weights (rotated_reference), onnxruntime
executes exactly them (accuracy level 0: float activations), and the rotations stay float.
Refused where there is no rotation path (RecurrentGemma, vision), in one line.
"""

import numpy as np
import pytest

from gemma_edge.cli import main
from runtime_check.onnx_runner import OnnxRunner
from runtime_check.parity import parity_metrics
from runtime_check.runner import teacher_forced_logits
from runtime_check.torch_runner import TorchRunner
from tests.runner_checks import assert_teacher_forced_parity
from tests.test_quantize import KLD_BOUND, TEXT, _artifact_logits, _fake_quantized

NAME = "gemma3_text"  # the real 270M's family: sliding window, q/k norms, sandwich norms
SPEC = {"seed": 0, "block": 256}


@pytest.fixture(scope="module")
def rotated(tiny_export):
    """(dir, manifest) of the tiny Gemma 3 fp32 ONNX export (rotated: the default), the
    session's shared one."""
    return tiny_export("onnx", NAME)


@pytest.fixture(scope="module")
def quantized(tiny, rotated):
    from quantization.quantize import quantize_export

    cache = {}

    def get(recipe, level=None):
        if (recipe, level) not in cache:
            out = rotated[0].parent / f"{recipe}-{level}"
            cache[recipe, level] = out, quantize_export(
                rotated[0], out, recipe, ref=tiny(NAME), progress=False, calibration_tokens=1024,
                onnx_accuracy_level=level)
        return cache[recipe, level]

    return get


def _initializers(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path / "model.onnx"))
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("prefill", [1, 9])
def test_rotated_onnx_export_equals_torch(tiny, rotated, prefill):
    ref = tiny(NAME)
    out, manifest = rotated
    assert manifest["graph"]["rotation"] == SPEC
    ids = ref.encode(TEXT)[:24]
    assert len(ids) > prefill + 2 * ref.config.sliding_window, "decode must pass the window"
    assert_teacher_forced_parity(OnnxRunner(out), ref.model, ids, prefill, atol=1e-4)


def test_rotations_are_small_float_matmuls_and_the_weights_are_rotated(tiny, rotated):
    """The hidden R (tiny: 128 = a Hadamard 128, no second factor) after every norm that
    feeds a Linear and back after the tied embedding, down's H_16 ⊗ H_16: constants of the
    graph; the folded ones leave no trace but changed weights."""
    from foundation.rotation import rotated_copy

    ref = tiny(NAME)
    _, rot = rotated_copy(ref.model, **SPEC)
    _, inits = _initializers(rotated[0])
    for matrix in rot.matrices():
        assert any(a.shape == matrix.shape and np.array_equal(a, matrix) for a in inits.values())
    weights = [p.detach().float().numpy() for p in ref.model.parameters() if p.ndim == 2]
    plain = {np.ascontiguousarray(a).tobytes() for w in weights for a in (w, w.T)}
    held = [a for a in inits.values() if a.size >= 4096]
    assert held and not plain & {a.tobytes() for a in held}  # no weight left unrotated


def test_rotated_onnx_quantizes_the_rotated_weights(tiny, rotated, quantized):
    """int8-calibrated at float activations: the runtime equals the rotated torch model
    with our dequantized weights (codes decided on the rotated weights), not the float
    model; the rotation constants are left float."""
    ref = tiny(NAME)
    out, manifest = quantized("int8-calibrated", 0)
    assert manifest["graph"]["rotation"] == SPEC
    ids = ref.encode(TEXT)
    expect = teacher_forced_logits(TorchRunner(_fake_quantized(ref, "int8-calibrated", "onnx",
                                                               rotation=SPEC)), ids, 8)
    got = _artifact_logits(out, ids)
    np.testing.assert_allclose(got, expect, atol=2e-4)
    assert np.abs(got - teacher_forced_logits(TorchRunner(ref.model), ids, 8)).max() > 1e-3
    model, inits = _initializers(out)
    from foundation.rotation import rotated_copy

    _, rot = rotated_copy(ref.model, **SPEC)
    # float 2-D constants shaped like a Linear's weight (transposed) are rotations only
    shapes = {tuple(p.shape[::-1]) for n, p in ref.model.named_parameters() if "proj" in n}
    float_2d = [a for a in inits.values() if a.dtype == np.float32 and a.shape in shapes]
    assert float_2d and all(any(np.array_equal(a, m) for m in rot.matrices()) for a in float_2d)
    linears = 7 * ref.config.num_hidden_layers + 1
    stats = manifest["quantization"]
    assert stats["quantized_weights"] == linears and stats["embedding"]


def test_rotated_int4_stays_within_the_int4_bound(tiny, quantized):
    ref = tiny(NAME)
    out, manifest = quantized("int4-calibrated")
    assert manifest["quantization"]["activations"] == "int8-in-kernel"
    ids = ref.encode(TEXT)
    kld = parity_metrics(teacher_forced_logits(TorchRunner(ref.model), ids, 8),
                         _artifact_logits(out, ids), ids)["kld_mean"]
    assert 0 < kld < KLD_BOUND["int4-calibrated"]


@pytest.mark.parametrize("source", ["tiny:recurrent_gemma", "tiny:gemma3"])
def test_rotate_is_refused_where_onnx_has_no_rotation_path(tmp_path, capsys, source):
    code = main(["export", source, "--format", "onnx", "--rotate", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--rotate" in err
    assert not (tmp_path / "x" / "onnx").exists()


def test_build_spec_onnx_rotate_must_be_a_bool(tmp_path):
    from foundation.errors import GemmaEdgeError
    from gemma_edge.build_spec import BuildSpec

    spec = tmp_path / "spec.toml"
    spec.write_text('source = "tiny:gemma3_text"\nformats = ["onnx"]\n[export]\nonnx_rotate = "yes"\n')
    with pytest.raises(GemmaEdgeError, match="onnx_rotate must be true or false"):
        BuildSpec.load(spec)
    spec.write_text('source = "tiny:gemma3_text"\nformats = ["onnx"]\n[export]\nonnx_rotate = true\n')
    assert BuildSpec.load(spec).onnx_rotate is True


def test_sensitivity_picks_groups_within_the_budget_and_they_matter(tiny):
    """Mixed precision by measured sensitivity (quantization/int4_sensitivity.py): every
    group measured, the picked ones fit the byte budget, and promoting them to int8 loses
    less than promoting as many bytes of the least sensitive groups."""
    import torch

    from quantization import int4_sensitivity as sens
    from quantization.grid import grid_for

    ref = tiny(NAME)
    model = ref.model
    ids = ref.encode(TEXT)
    g4, g8 = grid_for("onnx", 4, 32), grid_for("onnx", 8, 32)
    groups = sens.measure(model, ids, g4)
    assert len(groups) == 4 * ref.config.num_hidden_layers + 1 and all(g.kld > 0 for g in groups)
    low = sum(sens.group_bytes(model, g, g4) for g in groups)
    budget = low + (sum(sens.group_bytes(model, g, g8) for g in groups) - low) // 3
    chosen = sens.pick(model, groups, {"body": (g4, g8), "head": (g4, g8)}, budget)
    sizes = {g.label: sens.group_bytes(model, g, g8) - sens.group_bytes(model, g, g4) for g in groups}
    assert chosen and low + sum(sizes[g.label] for g in chosen) <= budget
    with torch.no_grad():
        base = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)

    def kld_with(promoted):
        saved = {}
        for g in groups:
            saved |= sens.fake_quantize(model, g.names, g8 if g in promoted else g4)
        kld = sens.mean_kld(model, ids, base)
        sens.restore(model, saved)
        return kld

    spent = sum(sizes[g.label] for g in chosen)
    least, used = [], 0
    for g in sorted(groups, key=lambda g: g.kld / max(sizes[g.label], 1)):
        if used + sizes[g.label] <= spent:
            least.append(g)
            used += sizes[g.label]
    assert kld_with(chosen) < kld_with(least)
    assert torch.equal(torch.log_softmax(model(torch.tensor([ids])).logits[0], -1), base)  # restored

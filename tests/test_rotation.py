"""export --rotate: orthogonal rotations of the weights' input spaces (foundation/rotation.py).

Float: the rotated model is the same function (HF forward and our decoder, every family),
and the original model is left alone. LiteRT: the rotated fp32 export equals torch, the
quantizer decides codes on the rotated weights and the runtime executes exactly them, and
the rotations themselves stay float. On the real 270M (test_real_rotation.py) the rotation
is what lowers LiteRT's int8 error.
"""

import numpy as np
import pytest
import torch

from gemma_edge.cli import main
from runtime_check.runner import teacher_forced_logits
from runtime_check.torch_runner import TorchRunner
from tests.conftest import FAMILY_NAMES
from tests.test_quantize import TEXT, _artifact_logits, _fake_quantized


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_rotated_copy_is_the_same_function(tiny, name):
    from exporter.cache_decoder import CacheDecoder
    from foundation.rotation import apply_to_decoder, rotated_copy

    ref = tiny(name)
    ids = torch.tensor([ref.encode(TEXT)])
    with torch.no_grad():
        base = ref.model(ids).logits
        model, rot = rotated_copy(ref.model)
        np.testing.assert_allclose(model(ids).logits, base, atol=1e-3)  # fp32 order; a wrong R: O(1)
        assert torch.equal(ref.model(ids).logits, base)  # the original is untouched
        plain, rotated = CacheDecoder(ref.model, ref.family), CacheDecoder(model, ref.family)
        apply_to_decoder(rotated)
        mask, pos = torch.ones_like(ids), torch.arange(ids.shape[1])[None]
        np.testing.assert_allclose(rotated(ids, mask, pos, *rotated.empty_cache())[0],
                                   plain(ids, mask, pos, *plain.empty_cache())[0], atol=1e-3)
        # and its weights did change: every Linear but none
        changed = [n for n, p in model.named_parameters() if n.endswith("proj.weight")
                   and not torch.equal(p, dict(ref.model.named_parameters())[n])]
        assert len(changed) == 7 * ref.model.config.num_hidden_layers
    for r in (rot.hidden.dense(), rot.head_dim, rot.down.dense()):
        np.testing.assert_allclose(r @ r.T, np.eye(r.shape[0]), atol=1e-5)


def test_rotating_in_place_is_the_same_rotation_without_the_copy(tiny, tmp_path):
    """A standalone export rotates its own model in place (ref.disposable): the same weights
    as the copy, no second model; an export given a caller's ref never touches it."""
    from foundation.rotation import rotated_copy, rotated_reference
    from foundation.sources import load_source
    from gemma_edge.api import export

    shared = tiny("gemma3_text")  # the session's: copied, never rotated in place
    own = load_source("tiny:gemma3_text")
    copied, _ = rotated_copy(shared.model)
    same, _ = rotated_copy(own.model, in_place=True)
    assert same is own.model
    for name, p in copied.named_parameters():
        assert torch.equal(p, dict(same.named_parameters())[name]), name
    own = load_source("tiny:gemma3_text")
    own.disposable = True  # a standalone quantize of one rotation: rotated_reference in place
    spec = copied.gemma_edge_rotation.spec()
    assert rotated_reference(own, spec).model is own.model
    for name, p in rotated_reference(shared, spec).model.named_parameters():
        assert torch.equal(p, dict(own.model.named_parameters())[name]), name
    before = {n: p.clone() for n, p in shared.model.named_parameters()}
    export(shared.spec, tmp_path / "out", formats=["onnx"], ref=shared)
    assert not shared.disposable
    for name, p in shared.model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_rotation_is_reproducible_from_its_spec(tiny):
    from foundation.rotation import make_rotation

    model = tiny("gemma3_text").model
    a, b, c = make_rotation(model, 0), make_rotation(model, 0), make_rotation(model, 1)
    assert torch.equal(a.hidden.dense(), b.hidden.dense()) and torch.equal(a.down_signs, b.down_signs)
    assert not torch.equal(a.hidden.dense(), c.hidden.dense())
    assert a.spec() == {"seed": 0, "block": 256}


def test_rotated_litert_export_quantizes_onto_our_grid(tiny, tmp_path):
    """Gemma 2 (the converter folds the final soft-cap into the rotated head): fp32 equals
    torch; int8-calibrated equals the rotated torch model with our dequantized weights; the
    rotation constants are the only float 2-D tensors left."""
    import mmap

    from exporter.tflite_export import export_tflite
    from foundation.rotation import rotated_reference
    from quantization.litert_backend import float_buffers, weight_tensors
    from quantization.quantize import quantize_export
    from tests.conftest import TINY_TFLITE

    ref = tiny("gemma2")
    ids = ref.encode(TEXT)
    export = export_tflite(ref, tmp_path / "tflite", rotate=True, **TINY_TFLITE)
    assert export["graph"]["rotation"] == {"seed": 0, "block": 256}
    # down's R = H_16 ⊗ H_16: X b a FULLY_CONNECTED, aᵀ (X b) a BATCH_MATMUL on a constant,
    # no TRANSPOSE around it (they were 112 of a 270M decode step's ~1200 ops)
    ops = _signature_ops(tmp_path / "tflite" / "model.tflite", "decode")
    assert "TRANSPOSE" not in ops and ops.count("BATCH_MATMUL") == 3 * ref.model.config.num_hidden_layers
    np.testing.assert_allclose(_artifact_logits(tmp_path / "tflite", ids),
                               teacher_forced_logits(TorchRunner(ref.model), ids, 8), atol=1e-4)
    manifest = quantize_export(tmp_path / "tflite", tmp_path / "q", "int8-calibrated", ref=ref,
                               progress=False, calibration_tokens=1024)
    assert manifest["graph"]["rotation"] == {"seed": 0, "block": 256}
    got = _artifact_logits(tmp_path / "q", ids)
    rotated = rotated_reference(ref, export["graph"]["rotation"])
    expect = teacher_forced_logits(TorchRunner(_fake_quantized(rotated, "int8-calibrated", "tflite")),
                                   ids, 8)
    np.testing.assert_allclose(got, expect, atol=2e-4)
    with open(tmp_path / "q" / "model.tflite", "rb") as f, \
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        left = weight_tensors(data)
        kept = float_buffers(data, rotated.model.gemma_edge_rotation.matrices())
    assert kept and set(left) == kept


def _signature_ops(path, key: str) -> list[str]:
    """The builtin op names of one signature of a .tflite, in order."""
    from ai_edge_litert import schema_py_generated as schema

    from quantization.litert_backend import builtin_code

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    index = next(model.SignatureDefs(i).SubgraphIndex() for i in range(model.SignatureDefsLength())
                 if model.SignatureDefs(i).SignatureKey().decode() == key)
    graph = model.Subgraphs(index)
    return [names[builtin_code(model.OperatorCodes(graph.Operators(i).OpcodeIndex()))]
            for i in range(graph.OperatorsLength())]


def test_export_cli_refuses_rotate_with_head_block(tmp_path, capsys):
    code = main(["export", "tiny:gemma2", "--format", "tflite", "--rotate", "--head-block", "64",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--rotate and --head-block" in err
    assert not (tmp_path / "x").exists()


def test_kronecker_rotation_applies_as_two_small_products():
    """x R for R = kron(a, b), computed as aᵀ X b (the 270M's hidden size 640 = 5 x 128):
    the same as the dense product, blockwise when a is the identity."""
    from foundation.rotation import Kron, orthogonal

    rng = np.random.default_rng(0)
    kron = orthogonal(5 * 8, rng)
    assert kron.a.shape == (5, 5) and kron.b.shape == (8, 8)
    x = torch.randn(2, 3, 40)
    np.testing.assert_allclose(kron.apply(x), x @ kron.dense(), atol=1e-5)
    np.testing.assert_allclose(kron.transposed().apply(kron.apply(x)), x, atol=1e-5)
    blocks = Kron(None, kron.b)
    np.testing.assert_allclose(blocks.apply(torch.eye(16)), torch.block_diag(kron.b, kron.b), atol=1e-6)
    dense = kron.dense()
    np.testing.assert_allclose(kron.apply(torch.eye(80)), torch.block_diag(dense, dense), atol=1e-6)
    assert [w.shape for w in kron.weights()] == [(5, 5), (8, 8)]


def test_rotated_hessians_equal_a_calibration_on_the_rotated_model(tiny):
    """The rotated reference reuses the unrotated calibration as Rᵀ H R: the same as
    collecting it on the rotated model."""
    from foundation.rotation import rotate_hessians, rotated_copy
    from quantization.calibration import calibration_batches, collect_hessians
    from quantization.weights import linear_names

    ref = tiny("gemma3_text")
    batches = calibration_batches(ref, tokens=256)
    names = linear_names(ref.model)
    plain = collect_hessians(ref.model, batches, names)
    model, rot = rotated_copy(ref.model)
    direct = collect_hessians(model, batches, names)
    derived = rotate_hessians(plain, rot, model.config)
    for name in names:
        np.testing.assert_allclose(derived[name], direct[name], rtol=1e-4,
                                   atol=1e-5 * np.abs(direct[name]).max())
    assert derived["model.layers.0.self_attn.q_proj"] is derived["model.layers.0.self_attn.v_proj"]

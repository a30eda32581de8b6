"""Every recipe on every tiny family in both formats: quantize, run in the runtime, compare.

Bounds are per recipe, measured on these tiny random models (their KLD is far higher
than a trained model's: random weights have no redundancy), with about 2x headroom.
Float-activation recipes must equal the fake-quantized torch model: that is the proof
that the runtime executes exactly the grid we chose (codes and scales), not its own.
"""

import copy
import json

import numpy as np
import pytest

from gemma_edge.cli import main
from quantization.recipes import RECIPES
from runtime_check.open_runner import open_runner
from runtime_check.parity import parity_metrics
from runtime_check.runner import teacher_forced_logits
from runtime_check.torch_runner import TorchRunner
from tests.conftest import FAMILY_NAMES

TEXT = "The quick brown fox jumps over the lazy dog, again and again, by the river bank."
# measured max over the three tiny families and both formats, then ~2x:
# int8 4e-4, int8-calibrated 3e-4, int8-dynamic 7e-4, int4-block32 0.056, block64 0.070,
# block128 0.084, int4-all-block32 0.081, int4-all-calibrated 0.059, int4-calibrated 0.027
KLD_BOUND = {"int8": 1e-3, "int8-calibrated": 1e-3, "int8-dynamic": 1.5e-3, "int4-block32": 0.12,
             "int4-block64": 0.15, "int4-block128": 0.17, "int4-all-block32": 0.17,
             "int4-all-calibrated": 0.12, "int4-calibrated": 0.06, "int4-head-calibrated": 0.12}
OFFERED = [(fmt, r) for r in RECIPES for fmt in ("onnx", "tflite") if fmt not in RECIPES[r].refused]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny, tiny_export):
    from quantization.quantize import quantize_export

    cache = {}

    def get(fmt, name, recipe, onnx_level=None):
        if (fmt, name, recipe, onnx_level) not in cache:
            src, _ = tiny_export(fmt, name)
            out = tmp_path_factory.mktemp("q") / f"{fmt}-{recipe}"
            manifest = quantize_export(src, out, recipe, ref=tiny(name), progress=False,
                                       calibration_tokens=1024, onnx_accuracy_level=onnx_level)
            cache[fmt, name, recipe, onnx_level] = (out, manifest)
        return cache[fmt, name, recipe, onnx_level]

    return get


def _artifact_logits(path, ids):
    """Teacher-forced logits of an artifact (prefill 8, then decode), through its runner."""
    runner = open_runner(path)
    try:
        return teacher_forced_logits(runner, ids, 8)
    finally:
        runner.close()


def _fake_quantized(ref, recipe, fmt, head_parts=0, rotation=None):
    """The torch model with our dequantized weights (for a rotated LiteRT export: the
    rotated model, as the quantizer sees it)."""
    import torch

    from foundation.rotation import rotated_reference
    from quantization.weights import quantize_weights

    if rotation:
        ref = rotated_reference(ref, rotation)

    model = copy.deepcopy(ref.model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, qw in quantize_weights(ref, RECIPES[recipe], fmt, progress=False,
                                         calibration_tokens=1024, head_parts=head_parts).items():
            modules[name].weight.copy_(torch.from_numpy(qw.dequantized()))
    return model


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("fmt,recipe", [p for p in OFFERED if p[1] != "int8-static"])
def test_recipe_runs_within_its_bound(tiny, quantized, name, fmt, recipe):
    ref = tiny(name)
    out, manifest = quantized(fmt, name, recipe)
    assert manifest["recipe"] == recipe and manifest["format"] == fmt
    assert manifest["quantization"]["body"]["grid"].startswith(f"int{RECIPES[recipe].body.bits}")
    ids = ref.encode(TEXT)
    base = teacher_forced_logits(TorchRunner(ref.model), ids, 8)
    runner = open_runner(out)
    got = teacher_forced_logits(runner, ids, 8)
    runner.close()
    kld = parity_metrics(base, got, ids)["kld_mean"]
    assert 0 < kld < KLD_BOUND[recipe]


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("fmt,recipe", [("onnx", "int8"), ("onnx", "int8-calibrated"),
                                        ("tflite", "int8"), ("tflite", "int8-calibrated")])
def test_runtime_executes_exactly_our_grid(tiny, quantized, name, fmt, recipe):
    """Float activations: the artifact equals torch with our dequantized weights (RTN and
    GPTQ codes alike; for LiteRT that proves ai-edge-quantizer reproduced our codes). The
    ONNX accuracy level can be forced to 0 (float activations) for any recipe: this is how
    int8-dynamic's codes could be checked the same way."""
    ref = tiny(name)
    out, manifest = quantized(fmt, name, recipe, 0 if fmt == "onnx" else None)
    assert manifest["quantization"]["activations"] == "float"
    ids = ref.encode(TEXT)
    head_parts = manifest["graph"].get("head_block", 0) if fmt == "tflite" else 0
    fake = _fake_quantized(ref, recipe, fmt, head_parts, manifest["graph"].get("rotation"))
    expect = teacher_forced_logits(TorchRunner(fake), ids, 8)
    runner = open_runner(out)
    got = teacher_forced_logits(runner, ids, 8)
    runner.close()
    np.testing.assert_allclose(got, expect, atol=2e-4)
    base = teacher_forced_logits(TorchRunner(ref.model), ids, 8)
    assert np.abs(base - got).max() > 1e-3  # and it is not the float model


def test_litert_head_parts_get_one_int8_scale_per_part_row(tiny, tmp_path):
    """export --head-block 64: the tied table as two 64-wide parts (one lookup and one
    FULLY_CONNECTED each). The float graph still equals torch; int8 then has one scale per
    64 inputs of each head row, and the runtime executes exactly that grid. Gemma 2: the
    converter folds the final soft-cap's 1/30 into each part (found as scaled copies)."""
    from exporter.tflite_export import export_tflite
    from foundation.errors import GemmaEdgeError
    from quantization.quantize import quantize_export
    from quantization.weights import quantize_weights
    from tests.conftest import TINY_TFLITE

    ref = tiny("gemma2")
    ids = ref.encode(TEXT)
    with pytest.raises(GemmaEdgeError, match="does not divide the hidden size 128"):
        export_tflite(ref, tmp_path / "bad", head_block=48)
    assert not (tmp_path / "bad").exists()
    export = export_tflite(ref, tmp_path / "tflite", head_block=64, **TINY_TFLITE)
    assert export["graph"]["head_block"] == 64
    np.testing.assert_allclose(_artifact_logits(tmp_path / "tflite", ids),
                               teacher_forced_logits(TorchRunner(ref.model), ids, 8), atol=1e-4)
    manifest = quantize_export(tmp_path / "tflite", tmp_path / "q", "int8-calibrated", ref=ref,
                               progress=False, calibration_tokens=1024)
    assert manifest["quantization"]["head"]["grid"] == "int8-block64"
    got = _artifact_logits(tmp_path / "q", ids)
    expect = teacher_forced_logits(TorchRunner(_fake_quantized(ref, "int8-calibrated", "tflite", 64)), ids, 8)
    np.testing.assert_allclose(got, expect, atol=2e-4)
    # finer scales: the head's weight error is below one scale per whole row
    rows = quantize_weights(ref, RECIPES["int8"], "tflite", progress=False)["lm_head"]
    parts = quantize_weights(ref, RECIPES["int8"], "tflite", progress=False, head_parts=64)["lm_head"]
    assert parts.weight_error < rows.weight_error


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_quantized_artifacts_are_smaller_and_integer(quantized, fmt):
    out8, m8 = quantized(fmt, "gemma3_text", "int8")
    out4, m4 = quantized(fmt, "gemma3_text", "int4-block32")
    src = json.loads((out8 / "manifest.json").read_text())["inputs"]["export"]
    model = m8["model_file"]

    def size(m):
        return sum(f["bytes"] for n, f in m["files"].items() if n.startswith("model."))

    float_size = sum(p.stat().st_size for p in __import__("pathlib").Path(src).glob("model.*"))
    assert size(m4) < size(m8) < float_size
    assert m8["inputs"]["export_sha256"] and model in m8["files"]


def test_calibrated_recipe_beats_round_to_nearest(tiny, quantized):
    ref = tiny("gemma3_text")
    ids = ref.encode(TEXT)
    base = teacher_forced_logits(TorchRunner(ref.model), ids, 8)
    kld = {}
    for recipe in ("int8", "int8-calibrated"):
        out, manifest = quantized("onnx", "gemma3_text", recipe)
        kld[recipe] = parity_metrics(base, teacher_forced_logits(open_runner(out), ids, 8),
                                     ids)["kld_mean"]
    assert kld["int8-calibrated"] < kld["int8"]


def test_quantize_cli_errors_are_one_line(tmp_path, tiny_export, capsys):
    src, _ = tiny_export("onnx", "gemma3_text")
    capsys.readouterr()  # the fixture's own output (first imports of torch warn) is not the CLI's
    cases = [
        ([str(tmp_path), "--recipe", "int8"], "not a gemma-edge export"),
        ([str(src), "--recipe", "int3"], "unknown recipe 'int3'"),
        ([str(src), "--recipe", "int8-static"], "not offered for onnx"),
        ([str(src), "--recipe", "int8-calibrated", "--calibration",
          "builtin:gemma_edge_field_notes", "--out", str(tmp_path / "x")], "overlaps the evaluation"),
    ]
    for argv, message in cases:
        assert main(["quantize", *argv, "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_quantize_cli_writes_artifacts(tmp_path, tiny_export, capsys):
    src, _ = tiny_export("onnx", "gemma2")
    out = tmp_path / "q"
    assert main(["quantize", str(src), "--recipe", "int4-block64", "--out", str(out), "--json",
                 "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["int4-block64"]["grids"]["body"]["grid"] == "int4-block64"
    assert (out / "manifest.json").is_file() and (out / "tokenizer.json").is_file()
    assert main(["quantize", str(out), "--recipe", "int8", "-q"]) == 2  # already quantized
    assert "already quantized" in capsys.readouterr().err


def test_quantize_cli_takes_both_formats_of_one_model_in_one_run(tmp_path, tiny_export, capsys):
    """What `build` runs: one model load and calibration for every format; FORMAT=NAME
    limits a recipe to that format's export."""
    import shutil

    for fmt in ("onnx", "tflite"):
        shutil.copytree(tiny_export(fmt, "gemma3_text")[0], tmp_path / fmt)
    other = tiny_export("onnx", "gemma")[0]
    capsys.readouterr()
    exports = [str(tmp_path / "onnx"), str(tmp_path / "tflite")]
    for argv, message in [([*exports[:1], "--recipe", "tflite=int8"], "none of the exports is tflite"),
                          ([*exports, "--recipe", "int8", "--out", str(tmp_path / "x")], "--out takes one"),
                          ([*exports, "--recipe", "int4-all-block32"], "not offered for tflite"),
                          ([exports[0], str(other), "--recipe", "int8"], "different models")]:
        assert main(["quantize", *argv, "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert main(["quantize", *exports, "--recipe", "int8-calibrated,onnx=int4-block64", "--json",
                 "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result) == ["onnx-int4-block64", "onnx-int8-calibrated", "tflite-int8-calibrated"]
    for name, row in result.items():
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert row["dir"] == str(tmp_path / name) and manifest["format"] == name.split("-")[0]


def test_check_report_shows_quantized_rows_and_per_layer_error(quantized, capsys):
    out, _ = quantized("onnx", "gemma3_text", "int4-calibrated")
    code = main(["check", str(out), "--against", "tiny:gemma3_text", "--no-latency",
                 "--text", "builtin:gemma_edge_field_notes", "--max-tokens", "64",
                 "--greedy-tokens", "4", "-q"])
    assert code in (0, 3)  # random tiny weights may miss the int4 gates; the report is written
    html = (out / "check" / "report.html").read_text()
    assert "int4-calibrated" in html and "Per-layer layer output error" in html
    report = json.loads((out / "check" / "report.json").read_text())
    layers = report.get("layers") or report["artifacts"][0]["layers"]
    assert len(layers) == 29 and layers[-1]["name"] == "lm_head"
    assert all(x["output_error"] > 0 for x in layers)


def test_calibration_is_collected_once_per_model(tiny):
    """`quantize --recipe a,b` (one build's recipes of a format) calibrates once; q/k/v share."""
    from quantization.weights import quantize_weights

    ref = tiny("gemma3_text")  # shared by the module's tests: others may have calibrated it
    key = ("builtin:calibration", 1024)

    def entries():
        return {(kind, k) for kind, table in ref.memo.items() for k in table}

    quantize_weights(ref, RECIPES["int4-calibrated"], "onnx", progress=False, calibration_tokens=1024)
    first = ref.memo["calibration"][key]
    keys = {e for e in entries() if e[0] == "calibration"}
    quantize_weights(ref, RECIPES["int8-dynamic"], "onnx", progress=False, calibration_tokens=1024)
    assert ref.memo["calibration"][key] is first
    assert {e for e in entries() if e[0] == "calibration"} == keys
    hessians, factors = first.hessians, first.factors
    q = "model.layers.0.self_attn.q_proj"
    assert hessians[q] is hessians[q.replace("q_proj", "v_proj")]
    assert len(factors) == len({id(h) for h in hessians.values()})


def test_onnx_stacks_matmuls_that_share_an_input(tiny, quantized):
    """q/k/v and gate/up run as one MatMulNBits each (then Split); the test above proves
    the stacked graph still computes exactly our grid."""
    import onnx

    out, manifest = quantized("onnx", "gemma3_text", "int4-calibrated")
    layers = tiny("gemma3_text").config.num_hidden_layers
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    kinds = [n.op_type for n in graph.node]
    assert manifest["quantization"]["packed_groups"] == 2 * layers
    assert kinds.count("MatMulNBits") == 4 * layers + 1  # qkv, o, gate+up, down; the head
    assert manifest["quantization"]["quantized_weights"] == 7 * layers + 1


LITERT_DYNAMIC = [r for r in RECIPES if RECIPES[r].activations.get("tflite") == "dynamic-int8"
                  and "tflite" not in RECIPES[r].refused]


@pytest.mark.parametrize("recipe", LITERT_DYNAMIC)
def test_litert_dynamic_recipes_dequantize_no_weight(quantized, recipe):
    """A dynamic-int8 recipe hands every weight to its kernel as integers, the LM head
    included: a DEQUANTIZE in front of a weight makes the runtime hold it in float32 (the
    270M's int8 head behind one decoded at 0.30x the peer's int4 in LiteRT-LM)."""
    from ai_edge_litert.interpreter import Interpreter

    out, _ = quantized("tflite", "gemma3_text", recipe)
    ops = Interpreter(model_path=str(out / "model.tflite"))._get_ops_details()
    assert ops and not [op for op in ops if op["op_name"] == "DEQUANTIZE"]

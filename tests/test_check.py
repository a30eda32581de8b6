"""check / report on tiny models: real exports, real runtimes, real metric computation."""

import json

import numpy as np
import pytest

from foundation.errors import GemmaEdgeError
from gemma_edge.cli import main
from runtime_check.gates import evaluate_gates, load_gates, recipe_family

TEXT = "builtin:gemma_edge_field_notes"


@pytest.fixture(scope="module")
def build(tmp_path_factory, tiny):
    from exporter.onnx_export import export_onnx
    from exporter.tflite_export import export_tflite

    out = tmp_path_factory.mktemp("build")
    export_onnx(tiny("gemma2"), out / "onnx")
    export_tflite(tiny("gemma2"), out / "tflite", prefill_lengths=(16, 64), cache_length=160)
    return out


def _damage_onnx(src, dst):
    """Copy an ONNX export and reverse the input rows of one MLP down-projection: a
    plausible layout bug. (Scaling would not do: Gemma 2's post-feed-forward RMSNorm
    cancels any scale. The exporter folds transposes, so initializers lose their module
    names; the down-projection is the [intermediate, hidden] = [256, 128] matrix.) The
    manifest is rewritten to match, as a buggy exporter would write it: the artifact is
    intact, only wrong, so it is `check`'s numbers that must catch it (a file changed
    behind its manifest's back is refused before any number: tests/test_hostile.py)."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from foundation.artifacts import sha256_file

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    down = [i for i in model.graph.initializer if list(i.dims) == [256, 128]]
    assert len(down) == 4, "one down-projection per layer of tiny gemma2"
    target = down[1]
    reversed_rows = numpy_helper.to_array(target)[::-1].copy()
    target.CopyFrom(numpy_helper.from_array(reversed_rows, target.name))
    (dst / "model.onnx.data").unlink()
    onnx.save(model, str(dst / "model.onnx"), save_as_external_data=True,
              location="model.onnx.data")
    manifest = json.loads((dst / "manifest.json").read_text())
    for name in ("model.onnx", "model.onnx.data"):
        manifest["files"][name] = {"sha256": sha256_file(dst / name),
                                   "bytes": (dst / name).stat().st_size}
    (dst / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_undamaged_export_passes_its_gates(build, fmt, capsys):
    code = main(["check", str(build / fmt), "--against", "tiny:gemma2", "--text", TEXT,
                 "--max-tokens", "128", "--greedy-tokens", "8", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["passed"]
    assert out["metrics"]["max_abs_delta_logit"] < 1e-4 and out["metrics"]["top1_agreement"] == 1
    assert all(g["match"] == g["of"] == 8 for g in out["greedy"])
    assert all("reference_near_tie_at" in g for g in out["greedy"])
    report = json.loads((build / fmt / "check" / "report.json").read_text())
    assert report["schema"] == 1 and len(report["metrics"]["kld_per_position"]) == 128
    lat = report["latency"]  # measured in a child process running only the runtime
    assert lat["runtime"] in ("onnxruntime", "litert") and lat["reps"] == 5
    assert lat["load_s"] > 0 and lat["ttft_ms"] > 0 and lat["decode_tps"] > 0
    # the tflite cache (160) holds a 128-token prompt and the 16 timed decode steps; decode
    # is timed right after each prompt, at its depth
    assert set(lat["prefill_tps_by_prompt"]) == set(lat["decode_tps_by_depth"]) == {"32", "128"}
    assert 0 < lat["peak_rss_mib"] < 2048


def test_damaged_artifact_fails_with_exit_3_and_names_the_gate(build, tmp_path, capsys):
    damaged = tmp_path / "onnx-damaged"
    _damage_onnx(build / "onnx", damaged)
    code = main(["check", str(damaged), "--against", "tiny:gemma2", "--text", TEXT,
                 "--max-tokens", "128", "--greedy-tokens", "8"])
    captured = capsys.readouterr()
    assert code == 3
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("gemma-edge: error")]
    assert len(errors) == 1 and "failed" in errors[0] and "max_abs_delta_logit" in errors[0]
    assert "Traceback" not in captured.err
    report = json.loads((damaged / "check" / "report.json").read_text())
    failed = [g for g in report["gates"] if not g["passed"]]
    assert failed and failed[0]["metric"] == "max_abs_delta_logit" and failed[0]["missed_by"] > 0
    assert report["metrics"]["kld_mean"] > 1e-6
    html = (damaged / "check" / "report.html").read_text()
    assert "FAIL" in html and "max_abs_delta_logit" in html


def test_build_report_compares_all_checked_artifacts(build, capsys):
    for fmt in ("onnx", "tflite"):
        assert main(["check", str(build / fmt), "--against", "tiny:gemma2", "--text", TEXT,
                     "--max-tokens", "64", "--greedy-tokens", "4", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(build)]) == 0
    out = capsys.readouterr().out
    assert "onnx" in out and "tflite" in out and "PASS" in out
    html = (build / "report.html").read_text()
    assert '<table id=summary>' in html and html.count("<tr class=pass>") >= 2
    assert html.count("<svg") >= 5  # scatter + 2 plots per artifact
    assert "Size vs mean KLD" in html and "KLD distribution" in html and "Decode speed" in html
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained
    report = json.loads((build / "report.json").read_text())
    assert report["schema"] == 1 and len(report["artifacts"]) >= 2


def test_report_without_checks_is_an_input_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no checked artifacts" in capsys.readouterr().err


def test_default_gates_cover_every_recipe_family():
    gates = load_gates()
    assert set(gates) >= {"fp32", "int8", "int4"}
    assert recipe_family("int4-block32") == "int4" and recipe_family("int8-static") == "int8"


def test_gate_evaluation_min_and_max():
    results = evaluate_gates({"kld_mean": 0.2, "top1_agreement": 0.9},
                             [{"metric": "kld_mean", "max": 0.1},
                              {"metric": "top1_agreement", "min": 0.85}])
    assert [r["passed"] for r in results] == [False, True]
    assert results[0]["missed_by"] == pytest.approx(0.1)
    with pytest.raises(GemmaEdgeError, match="unknown metric"):
        evaluate_gates({"kld_mean": 0.1}, [{"metric": "nope", "max": 1}])


@pytest.mark.parametrize("content,expect", [
    ("{not json", "not valid JSON"),
    ('{"int8": {"gates": [{"metric": "kld_mean"}]}}', "exactly one of min or max"),
])
def test_bad_gates_file(tmp_path, content, expect):
    f = tmp_path / "gates.json"
    f.write_text(content)
    with pytest.raises(GemmaEdgeError, match=expect):
        load_gates(f)


def test_metrics_are_finite_numbers_in_report(build):
    report = json.loads((build / "onnx" / "check" / "report.json").read_text())
    values = [v for v in report["metrics"].values() if isinstance(v, float)]
    assert values and np.isfinite(values).all()


def test_reference_side_is_computed_once_per_text(tiny, tiny_export):
    """A build checks several artifacts of one model: the reference logits and greedy
    continuations are shared, and only the latest text's logits are kept."""
    from runtime_check.check import check_artifact

    ref = tiny("gemma3_text")
    ref.memo.clear()
    src, _ = tiny_export("onnx", "gemma3_text")
    text = "The quick brown fox jumps over the lazy dog. " * 4
    first = check_artifact(src, ref, text=text, greedy_tokens=4, latency=False)
    cached = next(iter(ref.memo["logits"].values()))
    second = check_artifact(src, ref, text=text, greedy_tokens=4, latency=False)
    assert next(iter(ref.memo["logits"].values())) is cached  # not recomputed
    assert first["metrics"]["kld_mean"] == second["metrics"]["kld_mean"] < 1e-6
    check_artifact(src, ref, text=text + "Again.", greedy_tokens=4, latency=False)
    assert len(ref.memo["logits"]) == 1


def test_greedy_records_where_the_reference_nearly_ties(tiny):
    """Each greedy run carries the reference's top-1/top-2 logit gaps: a parting at a
    near-tie is a tie flip, which the report says."""
    from runtime_check.check import NEAR_TIE
    from runtime_check.report import _tie_note
    from runtime_check.runner import greedy_generate, greedy_margins
    from runtime_check.torch_runner import TorchRunner

    ref = tiny("gemma2")
    runner = TorchRunner(ref.model)
    ids = ref.encode("The quick brown fox")
    tokens, margins = greedy_margins(runner, ids, 6)
    assert tokens == list(greedy_generate(runner, ids, 6))
    runner.reset()
    logits = runner.prefill(ids)[-1]
    top = np.sort(logits)[-2:]
    assert margins[0] == pytest.approx(float(top[1] - top[0])) and min(margins) >= 0
    entry = {"reference_near_tie_at": 2, "reference_near_tie_margin": NEAR_TIE / 4}
    assert "near-tie at step 3" in _tie_note(entry) and "0.025" in _tie_note(entry)
    assert _tie_note({"reference_near_tie_at": None}) == _tie_note({}) == ""

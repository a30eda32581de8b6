"""`gemma-edge build SPEC.toml` on a tiny model: every stage, then a rerun that skips them."""

import json
import time

from gemma_edge.cli import main


def _spec(tmp_path, recipes='["int8"]', extra="", formats='["onnx"]'):
    spec = tmp_path / "gemma-edge.toml"
    spec.write_text(f'source = "tiny:gemma3_text"\nout = "b"\nformats = {formats}\n'
                    f'recipes = {recipes}\n{extra}[check]\nmax_tokens = 48\nlatency = false\n'
                    'greedy_tokens = 4\ntext = "builtin:gemma_edge_field_notes"\n')
    return spec


def test_build_runs_every_stage_then_skips_unchanged_ones(tmp_path, capsys):
    gates = tmp_path / "gates.json"
    gates.write_text(json.dumps({"fp32": {"gates": [{"metric": "max_abs_delta_logit", "max": 1e-3}]},
                                 "int8": {"gates": [{"metric": "kld_mean", "max": 1.0}]}}))
    spec = _spec(tmp_path, extra='gates = "gates.json"\n', formats='["onnx", "tflite"]')
    assert main(["build", str(spec), "--json", "-q"]) == 0
    first = json.loads(capsys.readouterr().out)
    names = [s["stage"] for s in first["stages"]]
    # LiteRT's export runs in the background beside ONNX's export and quantize
    assert names == ["export onnx", "quantize onnx-int8", "export tflite", "quantize tflite-int8",
                     "check onnx", "check onnx-int8", "check tflite", "check tflite-int8",
                     "package onnx", "package onnx-int8", "package tflite", "package tflite-int8",
                     # each package in its engine (LiteRT-LM, onnxruntime-genai)
                     "engine onnx", "engine onnx-int8", "engine tflite", "engine tflite-int8"]
    assert first["stages"][2]["background"] is True
    assert not any(s["skipped"] for s in first["stages"])
    assert (tmp_path / "b" / "report.html").is_file() and len(first["packages"]) == 4
    assert not list((tmp_path / "b").glob(".*.partial"))
    bundle = tmp_path / "b" / "packages" / "onnx-int8.onnx-bundle"
    assert json.loads((bundle / "manifest.json").read_text())["check"]["passed"] is True
    engines = {e["name"]: e for e in json.loads((tmp_path / "b" / "report.json").read_text())["packages"]}
    assert {e["engine"] for e in engines.values()} == {"litert-lm", "onnxruntime-genai"}
    assert len(engines) == 4 and all(e["passed"] for e in engines.values())
    assert [e["engine"] for e in first["engines"]] == [e["engine"] for e in engines.values()]
    assert main(["build", str(spec), "--json", "-q"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert all(s["skipped"] for s in second["stages"])
    # an export made by another gemma-edge version is made again (then its hash decides)
    manifest = tmp_path / "b" / "onnx" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["tools"]["gemma-edge"] = "0.0.1"
    manifest.write_text(json.dumps(data))
    assert main(["build", str(spec), "--json", "-q"]) == 0
    third = {s["stage"]: s["skipped"] for s in json.loads(capsys.readouterr().out)["stages"]}
    assert third["export onnx"] is False and third["export tflite"] is True


def test_build_exits_3_when_a_gate_fails_after_writing_everything(tmp_path, capsys):
    gates = tmp_path / "gates.json"
    gates.write_text(json.dumps({"fp32": {"gates": [{"metric": "max_abs_delta_logit", "max": 1e-3}]},
                                 "int8": {"gates": [{"metric": "kld_mean", "max": 1e-9}]}}))
    spec = _spec(tmp_path, extra='gates = "gates.json"\n')
    assert main(["build", str(spec), "-q"]) == 3
    assert "gates failed for onnx-int8" in capsys.readouterr().err
    assert (tmp_path / "b" / "report.html").is_file()


def test_bad_specs_are_one_line_errors(tmp_path, capsys):
    cases = [("nope.toml", "does not exist"),
             ("bad.toml", "not valid TOML"), ("keys.toml", "unknown keys: colour"),
             ("recipe.toml", "unknown recipe int3"), ("table.toml", "unknown recipe int3"),
             ("format.toml", "recipes for ['tflite'] but formats are onnx"),
             ("value.toml", "must be lists of recipe names"), ("type.toml", "must be a list or a table"),
             ("export.toml", "unknown [export] keys head"), ("block.toml", "tflite_head_block must be"),
             ("rotate.toml", "tflite_rotate must be true or false"),
             ("both.toml", "tflite_rotate and tflite_head_block do not combine")]
    (tmp_path / "bad.toml").write_text("source = \n")
    (tmp_path / "keys.toml").write_text('source = "tiny:gemma"\ncolour = 1\n')
    (tmp_path / "recipe.toml").write_text('source = "tiny:gemma"\nrecipes = ["int3"]\n')
    (tmp_path / "table.toml").write_text('source = "tiny:gemma"\nrecipes = {onnx = ["int3"]}\n')
    (tmp_path / "format.toml").write_text('source = "tiny:gemma"\nformats = ["onnx"]\n'
                                          'recipes = {tflite = ["int8"]}\n')
    (tmp_path / "value.toml").write_text('source = "tiny:gemma"\nrecipes = {onnx = "int8"}\n')
    (tmp_path / "type.toml").write_text('source = "tiny:gemma"\nrecipes = "int8"\n')
    (tmp_path / "export.toml").write_text('source = "tiny:gemma"\n[export]\nhead = 64\n')
    (tmp_path / "block.toml").write_text('source = "tiny:gemma"\n[export]\ntflite_head_block = -64\n')
    (tmp_path / "rotate.toml").write_text('source = "tiny:gemma"\n[export]\ntflite_rotate = "yes"\n')
    (tmp_path / "both.toml").write_text('source = "tiny:gemma"\n[export]\ntflite_rotate = true\n'
                                        'tflite_head_block = 64\n')
    for name, message in cases:
        assert main(["build", str(tmp_path / name), "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_recipes_per_format(tmp_path):
    from gemma_edge.build_spec import BuildSpec

    table = tmp_path / "table.toml"
    table.write_text('source = "tiny:gemma"\nformats = ["onnx", "tflite"]\n[recipes]\n'
                     'onnx = ["int8-calibrated"]\ntflite = ["int8-dynamic", "int4-calibrated"]\n')
    assert BuildSpec.load(table).recipes == {"onnx": ["int8-calibrated"],
                                             "tflite": ["int8-dynamic", "int4-calibrated"]}
    listed = tmp_path / "list.toml"
    listed.write_text('source = "tiny:gemma"\nrecipes = ["int8"]\n')
    assert BuildSpec.load(listed).recipes == {"onnx": ["int8"], "tflite": ["int8"]}


def test_a_failing_background_stage_is_one_line_and_a_stopped_one_leaves_nothing(tmp_path):
    import pytest

    from foundation.errors import GemmaEdgeError
    from gemma_edge.stages import ChildRun, Stage

    def export(fmt, source):
        stage = Stage(f"export {fmt}", "export", tmp_path / fmt, (), {"format": fmt}, child=True)
        return ChildRun([stage], {stage.name: "k"}, source, progress=False)

    failing = export("onnx", str(tmp_path / "missing"))
    with pytest.raises(GemmaEdgeError, match="build stage export onnx failed: .*missing"):
        failing.join()
    running = export("tflite", "tiny:gemma3_text")
    while not list(tmp_path.glob(".tflite.*.partial")):  # interrupted mid-export
        assert running.proc.poll() is None, "the export finished before it could be interrupted"
        time.sleep(0.2)
    running.stop()
    assert running.proc.returncode != 0
    assert not list(tmp_path.glob(".*.partial")) and not (tmp_path / "tflite").exists()

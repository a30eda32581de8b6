"""A build fanned out the way a CI matrix runs it: every stage in its own process and its own
working copy, artifacts passed only through a store; the results equal one `build`'s."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_edge.cli import main

SPEC = ('source = "tiny:gemma3_text"\nout = "b"\nformats = ["onnx"]\n'
        '[recipes]\nonnx = ["int8"]\n'
        '[check]\nmax_tokens = 48\nlatency = false\ngreedy_tokens = 4\n'
        'text = "builtin:gemma_edge_field_notes"\n')
# What is compared by bytes: every file of every export, quantized artifact and package,
# except where the converter is not deterministic (none so far on these paths: the test
# reports any file that differs, so a converter that stops being deterministic shows here).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _copy(root: Path, name: str) -> Path:
    copy = root / name
    copy.mkdir(parents=True)
    (copy / "gemma-edge.toml").write_text(SPEC)
    return copy / "gemma-edge.toml"


def _stage(spec: Path, name: str, store: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "gemma_edge", "build", str(spec), "--stage", name,
                          "--store", str(store), "--json", "-q"], capture_output=True, text=True,
                         env=ENV, cwd=spec.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _files(manifest_dir: Path) -> dict[str, str]:
    manifest = json.loads((manifest_dir / "manifest.json").read_text())
    return {name: f["sha256"] for name, f in manifest["files"].items()}


def _parity(report_dir: Path) -> dict:
    report = json.loads((report_dir / "report.json").read_text())
    return {k: report[k] for k in ("passed", "artifact_sha256", "metrics", "greedy", "gates")}


def _engine(report_dir: Path) -> dict:
    report = json.loads((report_dir / "engine.json").read_text())
    return {k: report[k] for k in ("passed", "engine", "metrics", "greedy", "gates")}


def test_stage_by_stage_through_a_store_equals_one_build(tmp_path, capsys):
    whole = _copy(tmp_path, "whole")
    assert main(["build", str(whole), "-q"]) == 0
    capsys.readouterr()
    assert main(["build", str(whole), "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["stages"]
    # export, quantize, checks, packages, each package in its engine
    assert [r["level"] for r in plan] == [0, 1, 1, 2, 2, 3, 3, 4]

    store = tmp_path / "store"
    results = {}
    for row in sorted(plan, key=lambda r: r["level"]):  # one machine per stage, level by level
        spec = _copy(tmp_path, row["name"].replace(" ", "-"))
        results[row["name"]] = _stage(spec, row["name"].replace(" ", "-"), store)
        assert results[row["name"]]["ran"] is True
        if row["action"] not in ("package", "engine"):  # every machine computes the same key;
            # a package's includes its check's report, which records when and how long, so it
            # is its own (and so is the engine check's of that package)
            assert results[row["name"]]["key"] == row["key"], row["name"]

    differ = []
    for row in plan:
        entry = store / results[row["name"]]["key"] / "output"
        mine = Path(row["output"])
        if row["action"] == "check":
            assert _parity(entry) == _parity(mine), row["name"]
        elif row["action"] == "engine":
            assert _engine(entry) == _engine(mine), row["name"]
        else:
            a, b = _files(entry), _files(mine)
            assert a.keys() == b.keys(), row["name"]
            differ += [f"{row['name']}: {n}" for n in a if n != "manifest.json" and a[n] != b[n]]
    assert differ == [], f"not byte-identical: {differ}"

    # a machine whose working copy already has the inputs fetches nothing and reruns nothing
    again = _stage(_copy(tmp_path, "again"), "package onnx-int8", store)
    assert again["ran"] is False


def test_stage_errors_are_one_line(tmp_path, capsys):
    spec = _copy(tmp_path, "one")
    store = tmp_path / "store"
    assert main(["build", str(spec), "--stage", "quantize onnx-int8", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert "needs 'export onnx'" in err and "--stage 'export onnx'" in err
    assert err.count("\n") == 1
    assert main(["build", str(spec), "--stage", "export gguf-9"]) == 2
    assert "has no stage 'export gguf-9'" in capsys.readouterr().err
    assert main(["build", str(spec), "--store", str(store)]) == 2
    assert "--store goes with --stage" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["build", str(spec), "--stage", "export onnx", "--store",
                 str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_tampered_store_entry_is_refused(tmp_path, capsys):
    store = tmp_path / "store"
    first = _copy(tmp_path, "first")
    assert main(["build", str(first), "--stage", "export onnx", "--store", str(store),
                 "-q", "--json"]) == 0
    key = json.loads(capsys.readouterr().out)["key"]
    graph = store / key / "output" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 1
    graph.write_bytes(bytes(data))
    second = _copy(tmp_path, "second")
    assert main(["build", str(second), "--stage", "quantize onnx-int8", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert "does not verify" in err and "delete that entry" in err
    assert not (second.parent / "b" / "onnx").exists() or not any(
        (second.parent / "b" / "onnx").iterdir())


@pytest.mark.parametrize("name", ["export onnx", "export-onnx", " export onnx "])
def test_stage_names_take_spaces_or_dashes(tmp_path, capsys, name):
    from gemma_edge.build_spec import BuildSpec
    from gemma_edge.stage_graph import plan
    from gemma_edge.stage_store import find_stage

    spec = BuildSpec.load(_copy(tmp_path, "x"))
    assert find_stage(plan(spec), name).name == "export onnx"

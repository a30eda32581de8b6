"""The build as a stage graph: `build --plan --json` shows it without running it, and a
change to any option of any stage makes exactly that stage and the stages after it stale."""

import json

import pytest

from gemma_edge.cli import main

BASE = {"max_tokens": "48", "greedy_tokens": "4", "latency": "false",
        "text": '"builtin:gemma_edge_field_notes"'}


def _spec(path, recipes='["int8"]', package="true", **check):
    options = {**BASE, **check}
    path.write_text('source = "tiny:gemma3_text"\nout = "b"\nformats = ["onnx"]\n'
                    f'recipes = {recipes}\npackage = {package}\ngates = "gates.json"\n[check]\n'
                    + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return path


def _plan(spec, capsys):
    assert main(["build", str(spec), "--plan", "--json"]) == 0
    return {s["name"]: s for s in json.loads(capsys.readouterr().out)["stages"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    (tmp / "gates.json").write_text(json.dumps({
        "fp32": {"gates": [{"metric": "max_abs_delta_logit", "max": 1e-3}]},
        "int8": {"gates": [{"metric": "kld_mean", "max": 1.0}]}}))
    spec = _spec(tmp / "gemma-edge.toml")
    assert main(["build", str(spec), "-q"]) == 0
    return tmp, spec


ALL = {"export onnx", "quantize onnx-int8", "check onnx", "check onnx-int8", "package onnx",
       "package onnx-int8", "engine onnx", "engine onnx-int8"}
AFTER_CHECKS = {"check onnx", "check onnx-int8", "package onnx", "package onnx-int8",
                "engine onnx", "engine onnx-int8"}


def test_the_plan_of_a_finished_build_is_all_up_to_date_with_keys(built, capsys):
    tmp, spec = built
    plan = _plan(spec, capsys)
    assert set(plan) == ALL and all(s["fresh"] for s in plan.values())
    assert all(len(s["key"]) == 64 for s in plan.values())
    assert plan["package onnx-int8"]["needs"] == ["quantize onnx-int8", "check onnx-int8"]
    assert plan["quantize onnx-int8"]["options"]["recipe"] == "int8"
    assert plan["engine onnx-int8"]["needs"] == ["package onnx-int8"]
    assert not (tmp / "b" / "plan").exists()  # nothing ran


@pytest.mark.parametrize("change, stale", [
    ({"max_tokens": "40"}, AFTER_CHECKS),
    ({"greedy_tokens": "5"}, AFTER_CHECKS),  # once left out of the check's freshness
    ({"latency": "true"}, AFTER_CHECKS),
    ({"text": '"builtin:austen_pride_and_prejudice_ch1"'}, AFTER_CHECKS),
    ({"recipes": '["int8", "int8-calibrated"]'},
     {"quantize onnx-int8-calibrated", "check onnx-int8-calibrated", "package onnx-int8-calibrated",
      "engine onnx-int8-calibrated"}),
    ({"package": "false"}, set()),
    ({"engines": "false"}, set()),
])
def test_an_option_change_makes_exactly_its_stage_and_what_follows_stale(built, capsys, tmp_path,
                                                                        change, stale):
    tmp, _spec_file = built
    check = {k: v for k, v in change.items() if k in {*BASE, "engines"}}
    other = {k: v for k, v in change.items() if k not in check}
    plan = _plan(_spec(tmp / "changed.toml", **other, **check), capsys)
    assert {name for name, s in plan.items() if not s["fresh"]} == stale
    if change.get("engines") == "false":  # no package runs in its engine then
        assert not [name for name in plan if name.startswith("engine ")]


def test_a_changed_gates_file_reruns_the_checks(built, capsys):
    tmp, spec = built
    gates = tmp / "gates.json"
    before = gates.read_text()
    gates.write_text(before.replace("1.0", "2.0"))
    try:
        plan = _plan(spec, capsys)
    finally:
        gates.write_text(before)
    assert {n for n, s in plan.items() if not s["fresh"]} == AFTER_CHECKS


@pytest.mark.parametrize("victim, stale", [
    ("onnx/model.onnx.data", ALL),
    ("onnx-int8/model.onnx", {"quantize onnx-int8", "check onnx-int8", "package onnx-int8",
                              "engine onnx-int8"}),
    ("onnx/check/report.json", {"check onnx", "package onnx", "engine onnx"}),
    ("packages/onnx.onnx-bundle/genai_config.json", {"package onnx", "engine onnx"}),
    ("packages/onnx.onnx-bundle/check/engine.json", {"engine onnx"}),
])
def test_a_tampered_byte_makes_its_stage_and_what_follows_stale(built, capsys, victim, stale):
    tmp, spec = built
    file = tmp / "b" / victim
    data = file.read_bytes()
    file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    try:
        plan = _plan(spec, capsys)
    finally:
        file.write_bytes(data)
    assert {n for n, s in plan.items() if not s["fresh"]} == stale


def test_the_loop_runs_what_the_plan_says(built, capsys):
    tmp, _spec_file = built
    spec = _spec(tmp / "greedy.toml", greedy_tokens="5")
    plan = _plan(spec, capsys)
    assert main(["build", str(spec), "--json", "-q"]) == 0
    ran = {s["stage"] for s in json.loads(capsys.readouterr().out)["stages"] if not s["skipped"]}
    assert ran == {n for n, s in plan.items() if not s["fresh"]} == AFTER_CHECKS
    rows = json.loads((tmp / "b" / "build.json").read_text())["stages"]
    assert all(r["cpu_seconds"] >= 0 for r in rows if not r["skipped"])

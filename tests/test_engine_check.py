"""`gemma-edge check PACKAGE`: a package run in its engine against the reference (greedy up
to the reference's first near-tie, the engine's own speed), its gates, its report, and the
build report's table and charts."""

import json
import re

import pytest

from gemma_edge.cli import main
from tests.test_package import KIND

CHECK = ["--against", "tiny:gemma3_text", "--greedy-tokens", "8"]


@pytest.fixture(scope="module")
def packages(tmp_path_factory, tiny_export):
    from exporter.package import package

    out = {}
    for fmt in KIND:
        src, _ = tiny_export(fmt, "gemma3_text")
        out[fmt] = tmp_path_factory.mktemp("eng") / f"gemma3.{KIND[fmt]}"
        package(src, out[fmt], KIND[fmt])
    return out


def test_required_tokens_end_at_the_first_near_tie_or_stop_token():
    from runtime_check.engine_check import required_tokens

    assert required_tokens([7, 8, 9], [2.0, 1.0, 3.0], {1}, 0.1) == 3  # no tie: all of them
    assert required_tokens([7, 8, 9], [2.0, 0.05, 3.0], {1}, 0.1) == 1  # the tie itself is free
    assert required_tokens([7, 1, 9], [2.0, 1.0, 0.0], {1}, 0.1) == 2  # the engine stops at <eos>
    assert required_tokens([], [], {1}, 0.1) == 0


def test_matched_tokens_is_the_reference_prefix_the_engine_text_starts_with(tiny):
    from runtime_check.engine_check import matched_tokens

    tok = tiny("gemma3_text").tokenizer
    ids = tok.encode(" the quick brown fox", add_special_tokens=False)
    assert matched_tokens(tok, ids, " the quick brown fox jumps") == len(ids)
    assert matched_tokens(tok, ids, " the quick red fox") == len(tok.encode(
        " the quick ", add_special_tokens=False))  # the space matches too
    assert matched_tokens(tok, ids, "") == 0


@pytest.mark.parametrize("fmt", list(KIND))
def test_check_package_runs_it_in_its_engine(packages, fmt, capsys):
    package = packages[fmt]
    assert main(["check", str(package), *CHECK, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["engine"] == {"tflite": "litert-lm", "onnx": "onnxruntime-genai"}[fmt]
    assert result["kind"] == KIND[fmt] and result["recipe"] == "fp32"
    # a float package in its engine: every prompt agrees with the reference up to its tie
    assert all(g["agrees"] and g["match"] >= g["required"] for g in result["greedy"])
    assert result["metrics"]["engine_greedy_to_tie"] == 1.0
    assert [g["metric"] for g in result["gates"]] == ["engine_greedy_to_tie"]
    lat = result["latency"]  # the engine's own counters, in its own process
    assert lat["engine"] == result["engine"] and lat["decode_tokens"] > 0
    assert lat["decode_tps"] > 0 and lat["prefill_tps"] > 0 and lat["peak_rss_mib"] > 0
    saved = json.loads((package / "check" / "engine.json").read_text())
    assert saved["package_sha256"] == result["package_sha256"]
    from foundation.integrity import verify_package

    verify_package(package)  # the report beside it leaves the package verifiable


def test_an_engine_gate_that_fails_exits_3(packages, tmp_path, capsys):
    gates = tmp_path / "gates.json"  # agreement above 100 %: cannot pass
    gates.write_text(json.dumps({"fp32": {"gates": [{"metric": "engine_greedy_to_tie", "min": 1.5}]}}))
    assert main(["check", str(packages["onnx"]), *CHECK, "--no-latency", "--gates", str(gates),
                 "-q"]) == 3
    assert "engine_greedy_to_tie" in capsys.readouterr().err


def test_artifact_checks_leave_engine_gates_to_the_package(tiny_export, tmp_path, capsys):
    """The default gates hold engine_* metrics; an artifact's check evaluates only its own."""
    from runtime_check.gates import gates_of, load_gates

    default = load_gates()
    assert {g["metric"] for g in gates_of(default["int8"], engine=True)} == {"engine_greedy_to_tie"}
    assert "engine_greedy_to_tie" not in {g["metric"] for g in gates_of(default["int8"], engine=False)}


def test_build_report_shows_the_engines_beside_the_python_runner(packages, tmp_path):
    """The report's table and decode chart: the engine's tok/s beside the Python runner's."""
    from runtime_check.report import format_engine_summary, render_html

    assert main(["check", str(packages["onnx"]), *CHECK, "--no-latency", "-q"]) == 0
    engine = json.loads((packages["onnx"] / "check" / "engine.json").read_text())
    engine["latency"] = {"ttft_s": 0.02, "prefill_tps": 900.0, "decode_tps": 77.5,
                         "peak_rss_mib": 80.0}  # fixed numbers: this tests the rendering
    python = {"name": engine["artifact"], "latency": {"decode_tps": 12.5, "ttft_ms": 40.0}}
    text = format_engine_summary([engine], [python])
    assert "onnxruntime-genai" in text and "12.5" in text and "77.5" in text
    artifact = {"name": engine["artifact"], "format": "onnx", "recipe": "fp32",
                "size_bytes": 1 << 20, "metrics": {"kld_mean": 0.0, "top1_agreement": 1.0,
                "ppl_ratio": 1.0, "max_abs_delta_logit": 0.0, "greedy_match_fraction": 1.0,
                "kld_median": 0.0, "kld_p99": 0.0, "kld_max": 0.0, "delta_p_top_mean": 0.0,
                "delta_p_top_rms": 0.0, "delta_p_next_rms": 0.0, "ppl_artifact": 1.0,
                "ppl_reference": 1.0, "kld_per_position": [0.0, 0.0]},
                "latency": python["latency"], "gates": [], "greedy": [], "passed": True,
                "source": "tiny:gemma3_text", "text_tokens": 2, "prefill_tokens": 1,
                "decode_tokens": 1}
    html = render_html([artifact], title="t", engines=[engine])
    assert "id=engines" in html and "Python runner" in html and "engine (package)" in html


def _label_boxes(svg: str):
    return [(float(x), float(y), len(t)) for x, y, t in
            re.findall(r'<text x="([\d.-]+)" y="([\d.-]+)" font-size="10">([^<]+)</text>', svg)]


def test_chart_labels_do_not_overlap():
    """Long artifact names side by side used to print over each other."""
    from runtime_check import svg_plots

    names = [f"tflite-int8-dynamic-{i}.litertlm" for i in range(6)]
    bars = svg_plots.bars([(n, [10.0 + i, 90.0]) for i, n in enumerate(names)], "Decode",
                          "tok/s", series=("Python", "engine"))
    rows = re.findall(r'text-anchor="end" font-size="10">([^<]+)</text>', bars)
    assert rows == names  # one row per name, each label on its own line
    ys = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="end"', bars)]
    assert min(b - a for a, b in zip(ys, ys[1:], strict=False)) >= svg_plots.LINE_H
    # six points almost on top of each other: their labels get separate boxes
    scatter = svg_plots.scatter([(n, 100.0 + i * 0.1, 0.01) for i, n in enumerate(names)],
                                "Size vs KLD", "MiB", "KLD")
    boxes = [(x, y - svg_plots.LINE_H, x + n * svg_plots.CHAR_W, y) for x, y, n in _label_boxes(scatter)
             if n > 10]
    assert len(boxes) == len(names)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)

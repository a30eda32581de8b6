"""gemma-edge check + report on the real 270M's fp32 LiteRT and ONNX exports."""

import json

import pytest

from gemma_edge.cli import main

pytestmark = pytest.mark.real


def test_real_fp32_exports_pass_their_gates_in_one_report(real_onnx, real_tflite, capsys):
    build = real_onnx[0].parent
    assert real_tflite[0].parent == build  # one build directory for both formats
    for artifact in (real_onnx[0], real_tflite[0]):
        assert main(["check", str(artifact), "--against", "builtin:gemma3-270m", "--quiet",
                     "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        m, lat = result["metrics"], result["latency"]
        with capsys.disabled():
            print(f"\n{artifact.name}: KLD {m['kld_mean']:.2e}, top-1 {m['top1_agreement']:.2%}, "
                  f"PPL ratio {m['ppl_ratio']:.5f}, max |Δlogit| {m['max_abs_delta_logit']:.2e}; "
                  f"TTFT {lat['ttft_ms']:.0f} ms ({lat['ttft_prompt_tokens']} tokens), decode "
                  f"{lat['decode_tps']:.1f} tok/s, runtime peak RSS {lat['peak_rss_mib']:.0f} MiB")
        assert result["text_tokens"] == 512 and m["top1_agreement"] == 1.0
        assert m["kld_mean"] < 1e-8 and abs(m["ppl_ratio"] - 1) < 1e-4
    assert main(["report", str(build), "--quiet"]) == 0
    html = (build / "report.html").read_text()
    assert "<table id=summary>" in html and html.count("<svg") >= 5
    assert "all gates passed" in html and "4-bit grid" in html

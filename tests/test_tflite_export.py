import json

import numpy as np
import pytest

from foundation.errors import GemmaEdgeError
from gemma_edge.cli import main
from runtime_check.litert_runner import LiteRTRunner
from tests.conftest import FAMILY_NAMES, TINY_TFLITE
from tests.runner_checks import assert_greedy_matches, assert_teacher_forced_parity

TEXT = "The quick brown fox jumps over the lazy dog, again and again."
PREFILL = TINY_TFLITE["prefill_lengths"]
CACHE = TINY_TFLITE["cache_length"]


@pytest.fixture
def exported(tiny_export):
    return lambda name: tiny_export("tflite", name)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("prefill_len", [1, 5, 20, 40])
def test_tflite_prefill_decode_matches_torch(tiny, exported, name, prefill_len):
    """Prefill through one or several (padded) signatures, then decode past the window."""
    ref = tiny(name)
    out, _ = exported(name)
    ids = ref.encode(TEXT)
    assert_teacher_forced_parity(LiteRTRunner(out), ref.model, ids, prefill_len, atol=1e-4)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_tflite_greedy_generation_matches_torch(tiny, exported, name):
    ref = tiny(name)
    out, _ = exported(name)
    assert_greedy_matches(LiteRTRunner(out, threads=1), ref.model, ref.encode("Once upon a time"),
                          24)


def test_tflite_signatures_and_manifest(tiny, exported):
    out, manifest = exported("gemma3_text")
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["format"] == "tflite" and on_disk["recipe"] == "fp32"
    assert on_disk["graph"]["rotation"] == {"seed": 0, "block": 256}  # rotated by default
    assert on_disk["inputs"]["source_sha256"] == tiny("gemma3_text").sha256
    sigs = on_disk["graph"]["signatures"]
    assert set(sigs) == {"decode", "prefill_8", "prefill_16"}
    assert sigs["prefill_16"]["inputs"]["tokens"] == [1, 16]
    assert sigs["prefill_16"]["inputs"]["mask"] == [1, 1, 16, CACHE]
    assert sigs["decode"]["inputs"]["kv_cache_k_3"] == [1, 1, CACHE, 32]
    assert sigs["decode"]["outputs"]["logits"] == [1, 1, 262]
    assert {"model.tflite", "tokenizer.json"} <= set(on_disk["files"])


def test_context_beyond_the_cache_is_refused(tiny, exported):
    out, _ = exported("gemma")
    runner = LiteRTRunner(out)
    runner.prefill(list(range(10, 90)))
    with pytest.raises(GemmaEdgeError, match="exceeds the KV cache"):
        for _ in range(CACHE):
            runner.decode(5)


@pytest.mark.parametrize("argv,expect", [
    (["--prefill-lengths", "8,x"], "comma-separated integers"),
    (["--prefill-lengths", "128", "--cache-length", "64"], "exceeds the KV cache length"),
    (["--cache-length", "100000"], "exceeds the model's context"),
])
def test_cli_tflite_option_errors(tmp_path, capsys, argv, expect):
    try:
        code = main(["export", "tiny:gemma", "--format", "tflite", "--out", str(tmp_path), *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "tflite").exists()


def test_cli_exports_both_formats_with_defaults(tmp_path, capsys):
    """Default prefill lengths and cache adapt to a tiny model's 512-token context."""
    assert main(["export", "tiny:gemma3_text", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"tflite", "onnx"}
    manifest = json.loads((tmp_path / "tflite" / "manifest.json").read_text())
    assert manifest["graph"]["cache_length"] == 512
    assert manifest["graph"]["prefill_lengths"] == [32, 128, 512]
    assert (tmp_path / "onnx" / "model.onnx").is_file()


def test_prefill_fills_the_last_slots_no_padded_signature_fits(exported):
    """90 + 1 tokens in a 96-slot cache leave 5: no prefill signature fits them padded, so
    they run as decode steps, with the logits a decode would give."""
    out, _ = exported("gemma")
    runner, stepped = LiteRTRunner(out), LiteRTRunner(out)
    for r in (runner, stepped):
        r.prefill(list(range(10, 100)))
        r.decode(5)
    tail = runner.prefill([7, 8, 9, 10, 11])
    expect = np.stack([stepped.decode(t) for t in (7, 8, 9, 10, 11)])
    assert tail.shape == expect.shape and np.abs(tail - expect).max() == 0.0
    with pytest.raises(GemmaEdgeError, match="exceeds the KV cache"):
        runner.prefill([1])

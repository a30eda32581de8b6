import json

import pytest

from gemma_edge.cli import main
from runtime_check.onnx_runner import OnnxRunner
from tests.conftest import FAMILY_NAMES
from tests.runner_checks import assert_greedy_matches, assert_teacher_forced_parity

TEXT = "The quick brown fox jumps over the lazy dog, again and again."


@pytest.fixture
def exported(tiny_export):
    return lambda name: tiny_export("onnx", name)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("prefill_len", [1, 5, 20])
def test_onnx_prefill_decode_matches_torch(tiny, exported, name, prefill_len):
    ref = tiny(name)
    out, _ = exported(name)
    ids = ref.encode(TEXT)
    window = getattr(ref.config, "sliding_window", None)
    if window:
        assert len(ids) > prefill_len + 2 * window, "decode must run past the sliding window"
    assert_teacher_forced_parity(OnnxRunner(out), ref.model, ids, prefill_len, atol=1e-5)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_onnx_greedy_generation_matches_torch(tiny, exported, name):
    ref = tiny(name)
    out, _ = exported(name)
    assert_greedy_matches(OnnxRunner(out, threads=1), ref.model, ref.encode("Once upon a time"), 24)


def test_onnx_cache_stays_in_onnxruntime(tiny, exported):
    import onnxruntime as ort

    out, _ = exported("gemma3_text")
    runner = OnnxRunner(out)
    runner.prefill(tiny("gemma3_text").encode("abc"))
    assert runner._past and all(isinstance(v, ort.OrtValue) for v in runner._past)
    assert runner.cached_tokens == 4  # <bos> a b c
    # GroupQueryAttention appends into the buffers bound as past and present (genai's mode)
    assert runner.shared_buffer and runner._past[0].shape()[2] >= 4
    before = runner._past[0]
    runner.decode(5)
    assert runner._past[0] is before and runner.cached_tokens == 5


def test_onnx_export_dir_and_manifest(tiny, exported):
    out, manifest = exported("gemma2")
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model.onnx.data", "tokenizer.json", "manifest.json"} <= names
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["format"] == "onnx" and on_disk["recipe"] == "fp32"
    assert on_disk["inputs"]["source_sha256"] == tiny("gemma2").sha256
    graph = on_disk["graph"]
    assert graph["inputs"]["input_ids"] == [1, "sequence_length"]
    assert graph["inputs"]["attention_mask"] == [1, "total_sequence_length"]
    assert graph["inputs"]["past_key_values.3.value"] == [1, 2, "past_sequence_length", 32]
    assert graph["outputs"]["present.0.key"] == [1, 2, "total_sequence_length", 32]
    assert graph["outputs"]["logits"] == [1, "sequence_length", 262]
    assert set(on_disk["files"]) >= {"model.onnx", "model.onnx.data"}
    assert on_disk["peak_rss_bytes"] > 0 and on_disk["wall_seconds"] > 0
    assert manifest == on_disk


def test_onnx_weights_are_external_data(exported):
    import onnx

    out, _ = exported("gemma")
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    external = [t for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and (out / "model.onnx.data").stat().st_size > 100_000


def test_cli_export_refuses_existing_dir_and_unknown_format(tmp_path, capsys):
    (tmp_path / "onnx").mkdir()
    assert main(["export", "tiny:gemma", "--format", "onnx", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "tiny:gemma", "--format", "coreml", "--out", str(tmp_path)]) == 2
    assert "unknown export format coreml" in capsys.readouterr().err


def test_failed_export_leaves_no_half_artifact(tmp_path, tiny, monkeypatch):
    import onnx

    from exporter.onnx_export import export_onnx

    def broken(*args, **kwargs):
        raise onnx.checker.ValidationError("simulated")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(onnx.checker.ValidationError):
        export_onnx(tiny("gemma"), tmp_path / "onnx")
    assert list(tmp_path.iterdir()) == []


def test_onnx_shared_cache_buffer_grows_without_losing_entries(tiny, exported):
    import numpy as np

    ref = tiny("gemma3_text")
    out, _ = exported("gemma3_text")
    ids = ref.encode(TEXT)
    grown, plain = OnnxRunner(out), OnnxRunner(out)
    for runner in (grown, plain):
        runner.prefill(ids[:6])
    size = grown._past[0].shape()[2]
    grown._reserve(size + 1)  # moves every cache into a buffer twice as long
    assert grown._past[0].shape()[2] > size
    for token in ids[6:12]:
        np.testing.assert_allclose(grown.decode(token), plain.decode(token), rtol=0, atol=1e-6)

"""Packages: round trip through each on-device engine on tiny models, hashes, token metadata."""

import json

import pytest

from gemma_edge.cli import main
from runtime_check.runner import greedy_generate
from runtime_check.torch_runner import TorchRunner
from tests.conftest import FAMILY_NAMES

PROMPT = "The quick brown fox"
KIND = {"tflite": "litertlm", "onnx": "onnx-bundle"}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, tiny_export):
    from exporter.package import package

    cache = {}

    def get(fmt, name):
        if (fmt, name) not in cache:
            src, _ = tiny_export(fmt, name)
            out = tmp_path_factory.mktemp("pkg") / f"{name}.{KIND[fmt]}"
            cache[fmt, name] = (out, package(src, out, KIND[fmt]))
        return cache[fmt, name]

    return get


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_package_generates_the_reference_greedy_text(tiny, packaged, name, fmt):
    from runtime_check.engines import open_engine

    ref = tiny(name)
    out, manifest = packaged(fmt, name)
    expect = ref.tokenizer.decode(list(greedy_generate(TorchRunner(ref.model), ref.encode(PROMPT), 12,
                                                       stop_ids=ref.stop_token_ids)),
                                  skip_special_tokens=True)
    engine = open_engine(out, threads=1)
    got = "".join(engine.generate(PROMPT, 12))
    engine.close()
    assert got == expect
    assert manifest["tokens"]["stop_tokens"] == {"<eos>": 1, "<end_of_turn>": 5}


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_engine_reads_the_tokenizers_stop_tokens(packaged, fmt):
    from runtime_check.engines import open_engine

    out, manifest = packaged(fmt, "gemma3_text")
    engine = open_engine(out, threads=1)
    meta = engine.token_metadata()
    engine.close()
    assert meta["bos_token_id"] == manifest["tokens"]["bos_token_id"] == 2
    assert sorted(s[0] for s in meta["stop_token_ids"]) == [1, 5]


def test_wrong_stop_token_metadata_is_refused(tmp_path, tiny_export, monkeypatch, capsys):
    """A .litertlm written with the wrong stop ids (the classic bug) does not load."""
    import exporter.package as pk

    src, _ = tiny_export("tflite", "gemma3_text")
    real = pk.token_metadata

    def wrong(artifact, family):
        meta = real(artifact, family)
        return {**meta, "stop_tokens": {"<eos>": meta["stop_tokens"]["<eos>"]}}  # no <end_of_turn>

    monkeypatch.setattr(pk, "token_metadata", wrong)
    pk.package(src, tmp_path / "bad", "litertlm")
    monkeypatch.undo()
    manifest = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    manifest["tokens"] = real(src, "gemma3_text")  # what the tokenizer says
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["run", str(tmp_path / "bad"), "--prompt", "hi", "-q"]) == 2
    err = capsys.readouterr().err
    assert "stop tokens [1]" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_tampered_package_is_refused(tmp_path, packaged, fmt, capsys):
    import shutil

    out, manifest = packaged(fmt, "gemma")
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    model = copy / manifest["model_file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    capsys.readouterr()  # whatever building the fixture printed
    for argv in (["run", str(copy), "--prompt", "hi"], ["bench", str(copy)]):
        assert main([*argv, "-q"]) == 2
        err = capsys.readouterr().err
        assert "does not match its manifest" in err and len(err.strip().splitlines()) == 1


def test_package_cli(tmp_path, tiny_export, capsys):
    src, _ = tiny_export("onnx", "gemma2")
    out = tmp_path / "bundle"
    assert main(["package", str(src), "--as", "onnx-bundle", "--out", str(out), "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "onnx-bundle" and (out / "genai_config.json").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"model.onnx", "genai_config.json", "tokenizer.json"}
    assert main(["package", str(src), "--as", "litertlm", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "needs a tflite artifact" in capsys.readouterr().err
    assert main(["run", str(out), "--prompt", "Hello", "--max-new-tokens", "4", "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "onnxruntime-genai"
    assert main(["bench", str(out), "--prefill-tokens", "16", "--decode-tokens", "4", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["decode_tps"] > 0 and bench["peak_rss_mib"] > 0


@pytest.mark.parametrize("name,recipe", [("gemma2", None), ("gemma3_text", None),
                                         ("gemma3_text", "int8-dynamic")])
def test_packaged_prefill_has_no_logits_and_the_same_kv_cache(tmp_path, tiny, tiny_export, name, recipe):
    """LiteRT-LM never reads prefill logits: the package drops them and the ops only they
    needed; every signature's remaining outputs stay bit-identical (quantized models too:
    ai-edge-quantizer stores weights after the flatbuffer)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from exporter.prefill_trim import strip_prefill_logits

    src, _ = tiny_export("tflite", name)
    if recipe:
        from quantization.quantize import quantize_export

        quantize_export(src, tmp_path / "q", recipe, ref=tiny(name), progress=False,
                        calibration_tokens=256)
        src = tmp_path / "q"
    removed = strip_prefill_logits(src / "model.tflite", tmp_path / "trimmed.tflite")
    assert removed and all(n > 2 for n in removed.values())  # at least the final norm and head
    full, trimmed = Interpreter(str(src / "model.tflite")), Interpreter(str(tmp_path / "trimmed.tflite"))
    rng = np.random.default_rng(0)
    for key in full.get_signature_list():
        a, b = full.get_signature_runner(key), trimmed.get_signature_runner(key)
        feed = {}
        for input_name, d in a.get_input_details().items():
            shape = d["shape"]
            if input_name == "tokens":
                feed[input_name] = rng.integers(3, 100, shape).astype(d["dtype"])
            elif input_name == "input_pos":
                feed[input_name] = np.arange(shape[0]).astype(d["dtype"])
            elif input_name == "mask":
                t, c = shape[-2], shape[-1]
                causal = np.where(np.arange(c)[None] <= np.arange(t)[:, None], 0, -1e30)
                feed[input_name] = causal.reshape(shape).astype(d["dtype"])
            else:  # KV caches
                feed[input_name] = rng.standard_normal(shape).astype(d["dtype"])
        got, expect = b(**feed), a(**feed)
        assert set(expect) - set(got) == ({"logits"} if key.startswith("prefill") else set())
        for out_name in got:
            np.testing.assert_array_equal(got[out_name], expect[out_name])

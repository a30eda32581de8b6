"""GGUF out: export, llama.cpp's block types, parity in llama.cpp, Ollama packages; hostile input.

Tiny models of every text family run in the real llama.cpp (llama-cpp-python); one real
test holds the 270M's F32 GGUF to the fp32 gate in llama.cpp and its tokenizer to ours.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_edge.cli import main
from runtime_check.runner import greedy_generate, teacher_forced_logits
from runtime_check.torch_runner import TorchRunner
from tests.conftest import FAMILY_NAMES

TEXT = "It was the best of times, it was the worst of times; 1234 héllo <b>wörld</b>."
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def gguf_export(tmp_path_factory, tiny):
    from exporter.gguf_export import export_gguf

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            out = tmp_path_factory.mktemp(f"gguf-{name}") / "gguf"
            cache[name] = (out, export_gguf(tiny(name), out))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def gguf_quantized(tmp_path_factory, tiny, gguf_export):
    from quantization.quantize import quantize_export

    cache: dict = {}

    def get(name: str, recipe: str):
        if (name, recipe) not in cache:
            src, _ = gguf_export(name)
            out = tmp_path_factory.mktemp(f"gguf-{name}") / f"gguf-{recipe}"
            cache[name, recipe] = (out, quantize_export(src, out, recipe, ref=tiny(name),
                                                        progress=False, calibration_tokens=512))
        return cache[name, recipe]

    return get


def _reader(path):
    import gguf

    return gguf.GGUFReader(str(path / "model.gguf"))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_export_writes_what_llama_cpp_reads(tiny, gguf_export, name):
    ref = tiny(name)
    out, manifest = gguf_export(name)
    reader = _reader(out)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    arch = ref.family.gguf_architectures[0]
    assert fields["general.architecture"] == arch
    assert fields[f"{arch}.block_count"] == ref.config.num_hidden_layers
    assert fields["tokenizer.ggml.bos_token_id"] == 2 and fields["tokenizer.ggml.eot_token_id"] == 5
    assert len(fields["tokenizer.ggml.tokens"]) == ref.config.vocab_size
    assert fields["tokenizer.chat_template"] == ref.tokenizer.chat_template
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    norm = ref.model.model.norm.weight.detach().numpy()
    assert np.array_equal(np.asarray(tensors["output_norm.weight"].data), norm + np.float32(1))
    embed = ref.model.model.embed_tokens.weight.detach().numpy()
    assert np.array_equal(np.asarray(tensors["token_embd.weight"].data), embed)
    layer_types = getattr(ref.config, "layer_types", None)
    if getattr(ref.config, "sliding_window", None):
        pattern = fields[f"{arch}.attention.sliding_window_pattern"]
        assert pattern == [t == "sliding_attention" for t in layer_types]
    assert manifest["format"] == "gguf" and manifest["recipe"] == "fp32"


@pytest.mark.parametrize("recipe", ["q8_0", "q4_0", "q8_0-calibrated", "q4_0-calibrated"])
def test_blocks_dequantize_bit_exactly_to_the_decided_weights(tiny, gguf_quantized, recipe):
    """gguf-py's reference dequantize of every written block equals codes x float16 scale."""
    import gguf
    from gguf.quants import dequantize

    from quantization.recipes import RECIPES
    from quantization.weights import quantize_weights

    ref = tiny("gemma3_text")
    out, manifest = gguf_quantized("gemma3_text", recipe)
    weights = quantize_weights(ref, RECIPES[recipe], "gguf", progress=False, calibration_tokens=512)
    tensors = {t.name: t for t in _reader(out).tensors}
    pairs = {"blk.1.ffn_down.weight": "model.layers.1.mlp.down_proj",
             "blk.3.attn_q.weight": "model.layers.3.self_attn.q_proj",
             "token_embd.weight": "lm_head"}
    for gguf_name, torch_name in pairs.items():
        t = tensors[gguf_name]
        qw = weights[torch_name]
        want = gguf.GGMLQuantizationType.Q8_0 if qw.grid.bits == 8 else gguf.GGMLQuantizationType.Q4_0
        assert t.tensor_type == want
        assert np.array_equal(dequantize(np.asarray(t.data), t.tensor_type), qw.dequantized())
    body = RECIPES[recipe].body.bits
    assert manifest["quantization"]["tensor_types"][f"Q{body}_0"] >= 4 * 7 - (body == 4)


def test_pack_q4_0_matches_llama_cpps_nibble_order():
    """Q4_0 keeps weight j in the low nibble of byte j and weight j + 16 in its high nibble."""
    import gguf
    from gguf.quants import dequantize

    from quantization.gguf_backend import pack_q4_0, pack_q8_0

    codes = (np.arange(64, dtype=np.int16).reshape(1, 64) // 2 % 16 - 8).astype(np.int8)
    scales = np.array([[0.5, 0.25]], dtype=np.float32)
    raw = pack_q4_0(codes, scales)
    assert raw.shape == (1, 36) and raw[0, 2] == 0 | (8 << 4)  # codes -8 (j=0) and 0 (j=16)
    assert np.array_equal(dequantize(raw, gguf.GGMLQuantizationType.Q4_0),
                          codes * np.repeat(scales, 32, axis=1))
    codes8 = np.arange(-32, 32, dtype=np.int8).reshape(1, 64)
    assert np.array_equal(dequantize(pack_q8_0(codes8, scales), gguf.GGMLQuantizationType.Q8_0),
                          codes8 * np.repeat(scales, 32, axis=1))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack_q4_0(np.full((1, 32), 9, np.int8), scales[:, :1])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_llama_cpp_runs_the_f32_export_at_fp32_parity(tiny, gguf_export, name):
    pytest.importorskip("llama_cpp")
    from runtime_check.llama_runner import LlamaRunner

    ref = tiny(name)
    out, _ = gguf_export(name)
    ids = ref.encode(TEXT)
    runner = LlamaRunner(out, threads=1)
    try:
        assert runner.tokenize(TEXT) == ids  # llama.cpp's tokenizer from our metadata
        got = teacher_forced_logits(runner, ids, 20, decode_steps=8)
        want = teacher_forced_logits(TorchRunner(ref.model), ids, 20, decode_steps=8)
        # measured 1.6e-3..2.2e-3: ggml's float16 GELU table is about half of it (docs/gguf.md)
        assert np.abs(got - want).max() < 5e-3
        assert (got.argmax(1) == want.argmax(1)).all()
        prompt = ref.encode(PROMPT)
        assert list(greedy_generate(runner, prompt, 16)) == \
            list(greedy_generate(TorchRunner(ref.model), prompt, 16))
    finally:
        runner.close()


def test_check_runs_quantized_gguf_in_llama_cpp(tmp_path, capsys):
    """The CLI path end to end; Q8_0's bytes are covered by the bit-exact test above."""
    pytest.importorskip("llama_cpp")
    recipe = "q4_0-calibrated"
    source = "tiny:gemma3_text"
    assert main(["export", source, "--format", "gguf", "--out", str(tmp_path), "--quiet"]) == 0
    assert main(["quantize", str(tmp_path / "gguf"), "--recipe", recipe, "--quiet"]) == 0
    artifact = tmp_path / f"gguf-{recipe}"
    code = main(["check", str(artifact), "--against", source, "--no-latency", "--json", "--quiet"])
    report = json.loads((artifact / "check" / "report.json").read_text())
    capsys.readouterr()
    assert code in (0, 3) and report["format"] == "gguf" and report["recipe"] == recipe
    metrics = report["metrics"]
    # random tiny weights: quantization error is real but far from chance
    assert 0 < metrics["kld_mean"] < 0.5
    assert metrics["top1_agreement"] > 0.6


def test_ollama_package_runs_and_stops_like_the_reference(tiny, gguf_export, tmp_path):
    pytest.importorskip("llama_cpp")
    from exporter.ollama_package import parse_modelfile
    from exporter.package import package
    from runtime_check.engines import open_engine

    ref = tiny("gemma3_text")
    src, _ = gguf_export("gemma3_text")
    out = tmp_path / "tiny.ollama"
    manifest = package(src, out, "ollama")
    assert set(manifest["files"]) >= {"model.gguf", "Modelfile"}
    modelfile = parse_modelfile(out / "Modelfile")
    assert (out / modelfile["from"]).is_file()
    assert sorted(v for k, v in modelfile["parameters"] if k == "stop") == ["<end_of_turn>", "<eos>"]
    assert modelfile["template"] == "{{ .Prompt }}"  # a PT model: the prompt as it is
    expect = ref.tokenizer.decode(list(greedy_generate(TorchRunner(ref.model), ref.encode(PROMPT), 12,
                                                       stop_ids=ref.stop_token_ids)),
                                  skip_special_tokens=True)
    engine = open_engine(out, threads=1)
    try:
        assert sorted(s[0] for s in engine.token_metadata()["stop_token_ids"]) == [1, 5]
        assert "".join(engine.generate(PROMPT, 12)) == expect
    finally:
        engine.close()
    from runtime_check.engines import benchmark

    timing = benchmark(out, prefill_tokens=16, decode_tokens=4, threads=1)
    assert timing["engine"] == "llama.cpp" and timing["decode_tokens"] == 4 and timing["decode_tps"] > 0


def test_it_modelfile_has_gemmas_turns():
    from exporter.ollama_package import modelfile_text

    text = modelfile_text("it", {"<eos>": 1, "<end_of_turn>": 106})
    assert "<start_of_turn>user\n{{ .Content }}<end_of_turn>\n" in text
    assert "<start_of_turn>model\n" in text
    assert 'PARAMETER stop "<end_of_turn>"' in text and 'PARAMETER stop "<eos>"' in text


# hostile input: one line, exit 2, nothing half-written
def _one_line(capsys, expect):
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_gguf_recipes_refused_on_other_formats_and_back(tmp_path, capsys, gguf_export):
    src, _ = gguf_export("gemma")
    assert main(["quantize", str(src), "--recipe", "int8", "--out", str(tmp_path / "q")]) == 2
    _one_line(capsys, "not a GGUF block type")
    assert main(["quantize", str(src), "--recipe", "q5_k", "--out", str(tmp_path / "q")]) == 2
    _one_line(capsys, "unknown recipe")
    assert not (tmp_path / "q").exists()


def test_family_without_a_gguf_graph_is_refused(tmp_path, capsys):
    from foundation.families import FAMILIES

    name = next((n for n, f in FAMILIES.items() if not f.gguf_architectures), None)
    if name is None:
        pytest.skip("every family has a GGUF architecture")
    assert main(["export", f"tiny:{name}", "--format", "gguf", "--out", str(tmp_path)]) == 2
    _one_line(capsys, "no GGUF export path")
    assert not (tmp_path / "gguf").exists()


def test_tampered_or_truncated_gguf_is_refused(tmp_path, capsys, gguf_export):
    import shutil

    src, _ = gguf_export("gemma")
    bad = tmp_path / "gguf"
    shutil.copytree(src, bad)
    data = (bad / "model.gguf").read_bytes()
    (bad / "model.gguf").write_bytes(data[: len(data) // 2])
    assert main(["check", str(bad), "--against", "tiny:gemma", "--no-latency"]) == 2
    _one_line(capsys, "model.gguf")
    assert main(["package", str(bad), "--as", "ollama", "--out", str(tmp_path / "p")]) == 2
    _one_line(capsys, "model.gguf")
    assert not (tmp_path / "p").exists()


def test_llama_runner_refuses_a_broken_file(tmp_path):
    pytest.importorskip("llama_cpp")
    from foundation.errors import GemmaEdgeError
    from runtime_check.llama_runner import LlamaRunner

    (tmp_path / "model.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(GemmaEdgeError, match="llama.cpp could not load"):
        LlamaRunner(tmp_path)
    with pytest.raises(GemmaEdgeError, match="no GGUF model"):
        LlamaRunner(tmp_path / "missing")


def test_ollama_needs_a_gguf_artifact(tmp_path, capsys, tiny_export):
    src, _ = tiny_export("onnx", "gemma")  # shared with the ONNX tests in one session
    capsys.readouterr()
    assert main(["package", str(src), "--as", "ollama", "--out", str(tmp_path / "p")]) == 2
    _one_line(capsys, "needs a gguf artifact")


@pytest.mark.real
def test_real_270m_f32_gguf_in_llama_cpp(real_ref, tmp_path):
    """The 270M's F32 GGUF at the fp32 gate in llama.cpp, and llama.cpp's tokenizer from our
    metadata gives our tokenizer's ids on held-out prose."""
    pytest.importorskip("llama_cpp")
    from exporter.gguf_export import export_gguf
    from foundation.texts import load_text
    from runtime_check.llama_runner import LlamaRunner

    out = tmp_path / "gguf"
    export_gguf(real_ref, out)
    text = load_text("builtin:dickens_tale_of_two_cities_ch1")[:1500]
    ids = real_ref.encode(text)[:160]
    runner = LlamaRunner(out, threads=2)
    try:
        assert runner.tokenize(text)[:100] == real_ref.encode(text)[:100]
        got = teacher_forced_logits(runner, ids, 96, decode_steps=16)
        want = teacher_forced_logits(TorchRunner(real_ref.model), ids, 96, decode_steps=16)
        # measured 0.050 max, 0.0036 mean on 160 Dickens tokens (logits up to 48): GELU table
        assert np.abs(got - want).max() < 0.1 and np.abs(got - want).mean() < 0.01
        assert (got.argmax(1) == want.argmax(1)).all()
    finally:
        runner.close()

"""RecurrentGemma: the family's quirks against transformers, the state-as-I/O ONNX export,
its runner, and `check` through the stage code (the family's implementations as data)."""

import math

import numpy as np
import pytest

from foundation.errors import GemmaEdgeError
from foundation.families import FAMILIES, family_for_model_type

NAME = "recurrent_gemma"


@pytest.fixture(scope="module")
def ref(tiny):
    return tiny(NAME)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, ref):
    from gemma_edge.api import export

    out = tmp_path_factory.mktemp("recurrent")
    export(f"tiny:{NAME}", out, formats=["onnx"], ref=ref)
    return out / "onnx"


@pytest.fixture(scope="module")
def ids(ref):
    rng = np.random.default_rng(7)
    return rng.integers(4, ref.config.vocab_size, 60).tolist()  # 60 tokens, window 8


def test_family_is_data_and_the_tiny_model_has_griffins_quirks(ref):
    family = family_for_model_type("recurrent_gemma")
    assert family is FAMILIES[NAME] and type(ref.model).__name__ == family.causal_lm_class
    cfg = ref.config
    assert cfg.layers_block_type == ["linear_attention", "linear_attention", "sliding_attention"]
    assert 0 < cfg.attention_window_size < 16  # small: the tests decode past it
    block = ref.model.model.layers[0].temporal_block
    assert block.conv_1d.kernel_size == (4,) and block.conv_1d.groups == cfg.lru_width  # depthwise
    attn = ref.model.model.layers[2].temporal_block
    assert attn.rotary_emb.inv_freq.numel() * 2 == cfg.head_dim // 2  # partial rotary: half
    normalizer = float(ref.model.model.normalizer.float())
    assert normalizer != math.sqrt(cfg.hidden_size)  # rounded to bfloat16, as transformers does
    assert normalizer == pytest.approx(math.sqrt(cfg.hidden_size), rel=2 ** -8)
    assert ref.stop_token_ids == [1, 5]


def _decoder_logits(decoder, ids, splits):
    import torch

    state, rows, start = decoder.empty_state(), [], 0
    for end in [*splits, len(ids)]:
        with torch.no_grad():
            out = decoder(torch.tensor([ids[start:end]]), torch.arange(start, end)[None], *state)
        rows.append(out[0][0].numpy())
        state, start = out[1:], end
    return np.concatenate(rows), state


@pytest.mark.parametrize("splits", [(1,), (5, 6, 7), (20, 27)])
def test_state_decoder_matches_transformers(ref, ids, splits):
    """The state-as-arguments math (parallel scan, conv over [state, inputs], window buffer,
    partial RoPE, soft-cap) against transformers' full forward, past the window."""
    from exporter.recurrent_decoder import RecurrentStateDecoder
    from runtime_check.torch_runner import full_forward_logits

    got, state = _decoder_logits(RecurrentStateDecoder(ref.model).eval(), ids, splits)
    assert np.abs(got - full_forward_logits(ref.model, ids)).max() < 1e-4
    assert all(s.dtype.is_floating_point and s.dtype.itemsize == 4 for s in state)  # fp32 state


def test_position_zero_resets_every_state(ref, ids):
    """A stale state (another text's) fed at position 0 changes nothing: the RG-LRU resets,
    the conv and the window ignore what came before."""
    import torch

    from exporter.recurrent_decoder import RecurrentStateDecoder

    decoder = RecurrentStateDecoder(ref.model).eval()
    _, stale = _decoder_logits(decoder, ids[::-1], (30,))
    with torch.no_grad():
        fresh = decoder(torch.tensor([ids[:12]]), torch.arange(12)[None], *decoder.empty_state())
        reused = decoder(torch.tensor([ids[:12]]), torch.arange(12)[None], *stale)
    assert any(s.abs().max() > 0 for s in stale)
    assert torch.equal(fresh[0], reused[0])


def test_transformers_prefill_after_decode_drops_the_conv_state(ref, ids):
    """Why the family has its own reference runner: transformers' multi-token call after
    position 0 restarts the conv from zeros; RecurrentTorchRunner feeds it step by step."""
    from runtime_check.recurrent_runner import RecurrentTorchRunner
    from runtime_check.runner import teacher_forced_logits
    from runtime_check.torch_runner import TorchRunner, full_forward_logits

    full = full_forward_logits(ref.model, ids)
    plain = teacher_forced_logits(TorchRunner(ref.model), ids, 5, 5)
    ours = teacher_forced_logits(RecurrentTorchRunner(ref.model), ids, 5, 5)
    assert np.abs(plain - full).max() > 1e-2
    assert np.abs(ours - full).max() < 1e-4


def test_loads_from_a_checkpoint_directory(ref, tmp_path, ids):
    from foundation.sources import load_source
    from runtime_check.torch_runner import full_forward_logits

    ref.model.save_pretrained(tmp_path)
    ref.tokenizer.save_pretrained(tmp_path)
    loaded = load_source(str(tmp_path))
    assert loaded.family.name == NAME and loaded.kind == "hf"
    assert np.array_equal(full_forward_logits(loaded.model, ids), full_forward_logits(ref.model, ids))


def test_onnx_graph_has_the_state_as_inputs_and_outputs(onnx_dir, ref):
    import onnx

    from foundation.artifacts import read_manifest

    manifest = read_manifest(onnx_dir)
    graph = onnx.load(str(onnx_dir / "model.onnx"), load_external_data=False).graph
    inputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in graph.input}
    outputs = {v.name for v in graph.output}
    width, window = ref.config.lru_width, ref.config.attention_window_size
    assert inputs["past_conv.0"] == [1, width, 3] and inputs["past_recurrent.1"] == [1, width]
    assert inputs["past_key_values.2.key"] == [1, 1, window - 1, ref.config.head_dim]
    assert inputs["input_ids"] == [1, "sequence_length"]
    assert {"logits", "present_conv.0", "present_recurrent.1", "present.2.value"} <= outputs
    assert [t["input"] for t in manifest["graph"]["state"]["tensors"]] == list(inputs)[2:]
    assert manifest["inputs"]["family"] == NAME
    # prefill is one graph for any length: no op repeated per token
    assert manifest["graph"]["nodes"] < 400


@pytest.mark.parametrize("prefill", [1, 5, 20])
def test_onnx_matches_transformers_then_decodes_past_the_window(onnx_dir, ref, ids, prefill):
    from runtime_check.open_runner import open_runner
    from runtime_check.runner import teacher_forced_logits
    from runtime_check.torch_runner import full_forward_logits

    runner = open_runner(onnx_dir)
    assert type(runner).__name__ == "RecurrentOnnxRunner" and runner.cache_len is None
    got = teacher_forced_logits(runner, ids, prefill)  # then 40+ decode steps, window 8
    assert np.abs(got - full_forward_logits(ref.model, ids)).max() <= 1e-4


def test_onnx_chunked_prefill_and_prefill_after_decode(onnx_dir, ref, ids):
    from runtime_check.recurrent_runner import RecurrentOnnxRunner
    from runtime_check.runner import teacher_forced_logits
    from runtime_check.torch_runner import full_forward_logits

    runner = RecurrentOnnxRunner(onnx_dir)
    runner.chunk = 7  # 60 tokens in 9 calls, state carried between them
    full = full_forward_logits(ref.model, ids)
    assert np.abs(runner.prefill(ids) - full).max() <= 1e-4
    assert np.abs(teacher_forced_logits(runner, ids, 5, 5) - full).max() <= 1e-4


def test_onnx_greedy_equals_transformers_for_64_tokens(onnx_dir, ref):
    from runtime_check.recurrent_runner import RecurrentOnnxRunner, RecurrentTorchRunner
    from runtime_check.runner import greedy_generate

    prompt = ref.encode("def fibonacci(n):")
    expect = list(greedy_generate(RecurrentTorchRunner(ref.model), prompt, 64))
    got = list(greedy_generate(RecurrentOnnxRunner(onnx_dir), prompt, 64))
    assert len(expect) == 64 and got == expect


def test_check_passes_with_a_context_past_the_window(onnx_dir, ref):
    from gemma_edge.api import check

    result = check(onnx_dir, f"tiny:{NAME}", ref=ref, latency=False, max_tokens=96)
    assert result["passed"], result["gates"]
    assert result["text_tokens"] > 4 * ref.config.attention_window_size
    assert result["metrics"]["max_abs_delta_logit"] <= 1e-4
    assert result["metrics"]["greedy_match_fraction"] == 1.0


def test_runner_refuses_a_graph_without_recurrent_state(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from runtime_check.recurrent_runner import RecurrentOnnxRunner

    x = helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, [1, 1, 4, 8])
    y = helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, [1, 1, 4, 8])
    graph = helper.make_graph([helper.make_node("Identity", [x.name], [y.name])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "model.onnx"))
    with pytest.raises(GemmaEdgeError, match="no recurrent state inputs"):
        RecurrentOnnxRunner(tmp_path)


def test_int8_passes_its_gates_and_keeps_the_recurrence_float(onnx_dir, ref, tmp_path):
    from gemma_edge.api import check, quantize

    manifest = next(iter(quantize(onnx_dir, "int8", out=tmp_path / "int8",
                                  progress=False).values()))
    names = [layer["name"] for layer in manifest["quantization"]["layers"]]
    assert any("linear_x" in n for n in names) and not any("rg_lru" in n or "conv" in n
                                                           for n in names)
    assert "rg_lru.recurrent_param" in manifest["graph"]["state"]["float_parameters"]
    result = check(tmp_path / "int8", f"tiny:{NAME}", ref=ref, latency=False, max_tokens=96)
    assert result["passed"], result["gates"]
    assert result["metrics"]["kld_mean"] < 1e-3


@pytest.fixture(scope="module")
def tflite_dir(tmp_path_factory, ref):
    from gemma_edge.api import export

    out = tmp_path_factory.mktemp("recurrent-tflite")
    export(f"tiny:{NAME}", out, formats=["tflite"], ref=ref, prefill_lengths=(16,))
    return out / "tflite"


def test_litert_matches_transformers_and_decodes_past_the_window(tflite_dir, ref, ids):
    """prefill 1 / 5 / 20 (a 16-token signature + decode steps for the rest), then decode
    steps past the window; greedy 64 tokens identical."""
    from runtime_check.open_runner import open_runner
    from runtime_check.recurrent_runner import RecurrentTorchRunner
    from runtime_check.runner import greedy_generate, teacher_forced_logits
    from runtime_check.torch_runner import full_forward_logits

    runner = open_runner(tflite_dir)
    assert type(runner).__name__ == "RecurrentLiteRTRunner" and runner.prefill_lengths == [16]
    full = full_forward_logits(ref.model, ids)
    for prefill in (1, 5, 20):
        assert np.abs(teacher_forced_logits(runner, ids, prefill) - full).max() <= 1e-3
    assert np.abs(teacher_forced_logits(runner, ids, 5, 5) - full).max() <= 1e-3
    prompt = ref.encode("def fibonacci(n):")
    expect = list(greedy_generate(RecurrentTorchRunner(ref.model), prompt, 64))
    assert list(greedy_generate(runner, prompt, 64)) == expect


@pytest.mark.parametrize("option", [{"rotate": True}, {"head_block": 64}, {"prefill_lengths": (1,)}])
def test_litert_options_that_do_not_apply_are_refused(ref, tmp_path, option):
    from exporter.recurrent_tflite import export_recurrent_tflite

    with pytest.raises(GemmaEdgeError):
        export_recurrent_tflite(ref, tmp_path / "t", **option)
    assert not (tmp_path / "t").exists()


def test_export_over_an_existing_dir_is_refused(onnx_dir, ref):
    from exporter.recurrent_onnx import export_recurrent_onnx

    with pytest.raises(GemmaEdgeError, match="already exists"):
        export_recurrent_onnx(ref, onnx_dir)


def test_package_runs_in_our_engine_with_its_state_documented(onnx_dir, ref, tmp_path):
    import json

    from gemma_edge.api import package, run
    from runtime_check.recurrent_runner import RecurrentTorchRunner
    from runtime_check.runner import greedy_generate

    made = package(onnx_dir, "onnx-bundle", out=tmp_path / "bundle")
    assert "genai_config.json" not in made["files"]  # onnxruntime-genai does not run Griffin
    doc = json.loads((tmp_path / "bundle" / "state_io.json").read_text())
    assert {t["input"] for t in doc["state"]} >= {"past_conv.0", "past_recurrent.1",
                                                   "past_key_values.2.key"}
    assert doc["stop_token_ids"] == [1, 5] and doc["window"] == ref.config.attention_window_size
    prompt = "The capital of France is"
    result = run(str(tmp_path / "bundle"), prompt, max_new_tokens=24, chat=False)
    expect = list(greedy_generate(RecurrentTorchRunner(ref.model), ref.encode(prompt), 24,
                                  ref.stop_token_ids))
    assert result["text"] == ref.tokenizer.decode(
        [t for t in expect if t not in ref.stop_token_ids], skip_special_tokens=True)


def test_litertlm_package_is_refused_in_one_line(tflite_dir, tmp_path, capsys):
    from gemma_edge.cli import main

    out = tmp_path / "rg.litertlm"
    assert main(["package", str(tflite_dir), "--as", "litertlm", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LiteRT-LM and transformers.js" in err[0]
    assert not out.exists()

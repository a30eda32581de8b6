"""CodeGemma: fill-in-the-middle through `gemma-edge run --fim-prefix/--fim-suffix`, stop
tokens of code models, the held-out code evaluation text. A tiny CodeGemma-style
checkpoint: the tiny Gemma 1 config whose tokenizer also has the four FIM tokens."""

import json

import pytest

from foundation.errors import GemmaEdgeError
from foundation.families import FAMILIES
from gemma_edge.cli import main

FIM = FAMILIES["gemma"].fim
PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory):
    from foundation.tiny import build_tiny

    model, tokenizer = build_tiny(FAMILIES["gemma"])
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<start_of_turn>", "<end_of_turn>", *FIM.values()]})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    out = tmp_path_factory.mktemp("codegemma") / "tiny-codegemma-2b"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _run_json(capsys, argv):
    assert main([*argv, "--json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)


def test_fim_round_trip_through_the_cli(code_dir, capsys):
    from foundation.sources import load_source
    from runtime_check.runner import greedy_generate
    from runtime_check.torch_runner import TorchRunner

    result = _run_json(capsys, ["run", str(code_dir), "--fim-prefix", PREFIX,
                                "--fim-suffix", SUFFIX, "--max-new-tokens", "12"])
    ref = load_source(str(code_dir))
    vocab = ref.tokenizer.get_vocab()
    raw = ref.tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
    tail = ref.tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    expect_ids = [vocab["<bos>"], vocab[FIM["prefix"]], *raw, vocab[FIM["suffix"]], *tail,
                  vocab[FIM["middle"]]]
    assert result["prompt_ids"] == expect_ids  # the FIM tokens are single tokens, in order
    stops = ref.stop_token_ids
    assert vocab[FIM["file_separator"]] in stops  # code models stop at the file separator
    expect = list(greedy_generate(TorchRunner(ref.model), expect_ids, 12, stops))
    assert result["generated_tokens"] == expect
    shown = [t for t in expect if t not in ref.tokenizer.all_special_ids]
    assert result["infill"] == ref.tokenizer.decode(shown)


def test_packages_of_code_models_stop_at_the_file_separator(code_dir):
    from exporter.package import token_metadata

    stops = token_metadata(code_dir, "gemma")["stop_tokens"]
    assert set(stops) == {"<eos>", "<end_of_turn>", FIM["file_separator"]}


def test_a_model_without_fim_tokens_is_refused_in_one_line(capsys):
    assert main(["run", "tiny:gemma", "--fim-prefix", "a", "--fim-suffix", "b", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no <|fim_prefix|> token" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("argv,expect", [
    (["--prompt", "x", "--fim-prefix", "a"], "do not combine"),
    ([], "required: --prompt"),
])
def test_run_arguments_refused(argv, expect, capsys):
    assert main(["run", "tiny:gemma", *argv, "-q"]) == 2
    assert expect in capsys.readouterr().err


def test_fim_from_a_package_is_refused(tmp_path):
    from gemma_edge.api import run_fim

    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(GemmaEdgeError, match="is a package"):
        run_fim(str(tmp_path), "a", "b")


def test_code_evaluation_text_is_held_out(tiny):
    from foundation.texts import load_text
    from quantization.calibration import calibration_text

    code = load_text("builtin:python_code_eval")
    compile(code, "python_code_eval", "exec")  # real, runnable source code
    assert "Apache License" in code.splitlines()[0]
    assert len(tiny("gemma").encode(code, chat=False)) > 512  # byte tokens: a full check
    with pytest.raises(GemmaEdgeError, match="overlaps the evaluation text"):
        calibration_text("builtin:python_code_eval")

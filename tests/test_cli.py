import json
import subprocess
import sys

import pytest

from gemma_edge.cli import main


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "gemma_edge", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_importing_the_cli_does_not_import_torch():
    code = ("import sys, gemma_edge.cli; "
            "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_exits_zero_and_lists_commands():
    out = _run("--help")
    assert out.returncode == 0
    for command in ("info", "run"):
        assert command in out.stdout
    assert "exit codes" in out.stdout


def test_info_tiny_json(capsys):
    assert main(["info", "tiny:gemma3_text", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    p = info["parameters"]
    assert info["family"] == "gemma3_text" and info["variant"] == "pt"
    assert p["total"] == p["embedding"] + p["transformer"] and p["lm_head_tied"]
    assert info["sliding_layers"] == 3 and info["full_layers"] == 1
    assert info["tokenizer"]["stop_tokens"] == ["<eos>", "<end_of_turn>"]


def test_info_tiny_text(capsys):
    assert main(["info", "tiny:gemma2"]) == 0
    out = capsys.readouterr().out
    assert "Gemma 2" in out and "parameters:" in out and "tied LM head" in out


def test_run_streams_and_reports_json(capsys):
    assert main(["run", "tiny:gemma", "--prompt", "Hello", "--max-new-tokens", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["generated_tokens"]) == 5 or result["stopped"]
    assert result["prompt_tokens"] == 6  # <bos> + 5 bytes


def test_run_process_exit_zero():
    out = _run("run", "tiny:gemma2", "--prompt", "abc", "--max-new-tokens", "4", "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


BAD_INPUTS = [
    (["info", "/no/such/dir"], "does not exist"),
    (["info", "tiny:nope"], "unknown Gemma family"),
    (["info", "builtin:gemma-9000"], "unknown built-in model"),
    (["run", "tiny:gemma", "--prompt", "x", "--max-new-tokens", "0"], "at least 1"),
    (["run", "tiny:gemma"], "required: --prompt"),
    (["frobnicate"], "invalid choice"),
    (["export", "tiny:gemma3_text", "--format", "tflite", "--out", "/nonexistent/out",
      "--head-block", "-8"], "--head-block must be 0 or positive"),
]


def _exit_code(argv):
    """main()'s return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv,expect", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2(argv, expect, capsys):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert expect in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_files_through_the_real_process(tmp_path):
    """The real exit path: corrupt inputs give exit 2, one stderr line, no traceback."""
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"NOPE" + b"\0" * 64)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "gemma3n"}')
    for source, expect in [(fake, "not a GGUF file"), (tmp_path / "ckpt", "Gemma 3n")]:
        out = _run("info", str(source))
        assert out.returncode == 2, out.stderr
        assert expect in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr

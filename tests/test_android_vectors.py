"""The shared Android test vectors, Python side (the Kotlin core reads the same files),
and the Kotlin core's own JUnit suite compiled with kotlinc and run here."""

import json
import subprocess
from pathlib import Path

import pytest

from foundation.chat import format_chat
from foundation.errors import GemmaEdgeError
from foundation.streaming import StopTextFilter

DEMO = Path(__file__).resolve().parent.parent / "android_demo"
VECTORS = DEMO / "test_vectors"


def _load(name):
    return json.loads((VECTORS / name).read_text())


@pytest.mark.parametrize("case", _load("chat_template.json")["cases"], ids=lambda c: c["name"])
def test_chat_vectors(case):
    assert format_chat(case["messages"],
                       add_generation_prompt=case.get("add_generation_prompt", True)) == case["expected"]


@pytest.mark.parametrize("case", _load("stop_tokens.json")["cases"], ids=lambda c: c["name"])
def test_stop_token_vectors(case):
    f = StopTextFilter(_load("stop_tokens.json")["stops"])
    text = "".join(f.feed(chunk) for chunk in case["chunks"]) + f.finish()
    assert (text, f.stopped) == (case["expected_text"], case["expected_stopped"])


@pytest.mark.parametrize("case", _load("manifest.json")["cases"], ids=lambda c: c["name"])
def test_manifest_vectors(case, tmp_path):
    from foundation.integrity import verify_package

    (tmp_path / "manifest.json").write_text(json.dumps(_load("manifest.json")["manifest"]))
    for name, text in case["files"].items():
        (tmp_path / name).write_text(text)
    try:
        verify_package(tmp_path)
        got = "ok"
    except GemmaEdgeError as exc:
        file = exc.problem.split("package file ")[1].split()[0]
        got = ("missing:" if "missing" in exc.problem else "mismatch:") + file
    assert got == case["expected"]


def test_kotlin_core_unit_tests_pass():
    """make install provides kotlinc (npm, android_demo/package.json) and junit4 (Debian)."""
    proc = subprocess.run(["bash", str(DEMO / "core" / "run_tests.sh")], capture_output=True,
                          text=True, timeout=600)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    passed, failed = (int(part.split()[0]) for part in last.split(", "))
    assert failed == 0 and passed >= 12, last

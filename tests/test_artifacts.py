import json

import pytest

from foundation.artifacts import (
    atomic_output_dir,
    read_manifest,
    sha256_file,
    sha256_files,
    write_manifest,
)


def test_atomic_dir_appears_only_on_success(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("stage failed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [], "no temp dirs left behind"
    with atomic_output_dir(target) as tmp:
        (tmp / "model.bin").write_bytes(b"abc")
    assert (target / "model.bin").read_bytes() == b"abc"


def test_a_ctrl_c_inside_a_finalizer_still_stops_the_stage(tmp_path):
    """Python drops a KeyboardInterrupt raised inside a finalizer (__del__, gc and weakref
    callbacks: jax and importlib have them): an interrupted export went on and committed
    its artifact (4 runs in 30 of test_build's stop test). Such a SIGINT is delivered again
    outside the finalizer, and a stage that reaches its commit after one refuses to commit."""
    import signal
    import sys
    import time

    from foundation import interrupts

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside __del__

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_hook = sys.unraisablehook
    target = tmp_path / "out"
    try:
        interrupts.install()
        went_on = []
        with pytest.raises(KeyboardInterrupt):
            with atomic_output_dir(target) as tmp:
                Finalized()  # the interrupt cannot be raised in there...
                time.sleep(2)  # ...so it arrives here, 50 ms later
                went_on.append(True)
        assert not went_on and list(tmp_path.iterdir()) == []

        interrupts.install()
        with pytest.raises(KeyboardInterrupt):
            with atomic_output_dir(target) as tmp:
                Finalized()
                (tmp / "model.bin").write_bytes(b"abc")  # the stage ends before the redelivery
        assert list(tmp_path.iterdir()) == [], "the commit refused: no artifact, no temp dir"
        time.sleep(4 * interrupts.REDELIVER_S)  # and the redelivery was called off

        interrupts.install()  # the next command starts clean
        with atomic_output_dir(target) as tmp:
            (tmp / "model.bin").write_bytes(b"abc")
        assert (target / "model.bin").exists()
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


def test_atomic_dir_refuses_or_replaces_existing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_output_dir(target) as tmp:
            (tmp / "new").write_text("new")
    assert (target / "old").exists()
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_manifest_records_hashes_inputs_and_costs(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("world")
    m = write_manifest(tmp_path, stage="export", inputs={"source": "tiny:gemma"}, started=0.0)
    assert read_manifest(tmp_path) == json.loads(json.dumps(m))
    assert set(m["files"]) == {"a.bin", "sub/b.txt"}
    assert m["files"]["a.bin"] == {
        "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "bytes": 5}
    assert m["peak_rss_bytes"] > 10_000_000 and "torch" in m["tools"]


def test_set_hash_is_order_independent_and_content_sensitive(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("2")
    h = sha256_files([a, b], tmp_path)
    assert h == sha256_files([b, a], tmp_path)
    b.write_text("3")
    assert h != sha256_files([a, b], tmp_path)
    assert sha256_file(a) == "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"

import json

import numpy as np
import pytest

from foundation.errors import SourceError
from foundation.sources import check_safetensors, load_source
from runtime_check.torch_runner import full_forward_logits
from tests.conftest import FAMILY_NAMES
from tests.gguf_tiny import write_tiny_gguf

TEXT = "Hello there, the cat sat on the mat."


def _save_hf_dir(ref, path):
    ref.model.save_pretrained(path)
    ref.tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_hf_checkpoint_dir_round_trip(tiny, tmp_path, name):
    ref = tiny(name)
    loaded = load_source(str(_save_hf_dir(ref, tmp_path / f"{name}-ckpt")))
    assert loaded.kind == "hf" and loaded.family.name == name and loaded.variant == "pt"
    assert loaded.checkpoint_dir == tmp_path / f"{name}-ckpt"
    ids = ref.encode(TEXT)
    assert loaded.encode(TEXT) == ids
    np.testing.assert_array_equal(full_forward_logits(loaded.model, ids),
                                  full_forward_logits(ref.model, ids))
    assert len(loaded.sha256) == 64


def test_it_variant_detected_and_chat_encoding(tiny, tmp_path):
    loaded = load_source(str(_save_hf_dir(tiny("gemma3_text"), tmp_path / "tiny-gemma3-it")))
    assert loaded.variant == "it"
    text = loaded.tokenizer.decode(loaded.encode("Hi"))
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert loaded.encode("Hi", chat=False) == loaded.tokenizer("Hi")["input_ids"]


def test_gguf_written_here_loads_to_the_same_model(tmp_path, isolated_cache):
    path = tmp_path / "tiny-gemma3.gguf"
    original = write_tiny_gguf(path)
    ref = load_source(str(path))
    assert ref.kind == "gguf" and ref.family.name == "gemma3_text" and not ref.from_cache
    ids = ref.encode(TEXT)
    assert ref.tokenizer.decode(ids, skip_special_tokens=True) == TEXT
    assert ids[0] == ref.tokenizer.bos_token_id
    np.testing.assert_allclose(full_forward_logits(ref.model, ids),
                               full_forward_logits(original, ids), atol=1e-6, rtol=0)
    assert ref.config.layer_types.count("full_attention") == 1


def test_gguf_cache_hit_skips_conversion(tmp_path, isolated_cache, monkeypatch):
    path = tmp_path / "tiny-gemma3-it.gguf"
    write_tiny_gguf(path, name="Tiny Gemma 3 IT")
    first = load_source(str(path))
    entries = list((isolated_cache / "gguf").iterdir())
    assert len(entries) == 1 and json.loads((entries[0] / "gemma_edge_source.json").read_text())

    import foundation.gguf_cache as gguf_cache

    def no_conversion(*args, **kwargs):
        raise AssertionError("a cache hit must not convert again")

    monkeypatch.setattr(gguf_cache, "_dequantize_to", no_conversion)
    monkeypatch.setattr(gguf_cache, "read_gguf_header", no_conversion)
    second = load_source(str(path))
    assert second.from_cache and not first.from_cache
    assert second.sha256 == first.sha256 and second.variant == "it"
    ids = second.encode("abc", chat=False)
    np.testing.assert_array_equal(full_forward_logits(first.model, ids),
                                  full_forward_logits(second.model, ids))


def test_jobs_converting_one_gguf_at_once_convert_it_once(tmp_path, isolated_cache, monkeypatch):
    """Two conversions of one GGUF at the same time (CI jobs on one machine, test workers):
    one converts while the other waits on the lock, then reads the entry it made."""
    import threading
    import time

    import foundation.gguf_cache as gguf_cache
    from foundation.artifacts import sha256_file

    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    sha = sha256_file(path)
    real, calls = gguf_cache._dequantize_to, []

    def slow(*args):  # long enough that the second job arrives mid-conversion
        calls.append(1)
        time.sleep(0.5)
        real(*args)

    monkeypatch.setattr(gguf_cache, "_dequantize_to", slow)
    results = []
    jobs = [threading.Thread(target=lambda: results.append(gguf_cache.convert_gguf(path, sha)))
            for _ in range(2)]
    for job in jobs:
        job.start()
        time.sleep(0.1)
    for job in jobs:
        job.join()
    assert len(calls) == 1 and sorted(r[2] for r in results) == [False, True]
    assert results[0][0] == results[1][0] and results[0][1] == results[1][1]
    assert [p.name for p in (isolated_cache / "gguf").iterdir()] == [results[0][0].name]


def test_failed_conversion_leaves_no_cache_entry(tmp_path, isolated_cache, monkeypatch):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    import foundation.gguf_cache as gguf_cache

    def boom(path, family, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise SourceError("simulated failure")

    monkeypatch.setattr(gguf_cache, "_dequantize_to", boom)
    with pytest.raises(SourceError):
        load_source(str(path))
    # no entry, and no empty directory the failed conversion created for it
    assert not (isolated_cache / "gguf").exists() or not any((isolated_cache / "gguf").iterdir())


# --- bad inputs: each a SourceError with a message that names the problem and the fix ---

def test_missing_path():
    with pytest.raises(SourceError, match="does not exist.*builtin:gemma3-270m"):
        load_source("/no/such/model")


def test_dir_without_config(tmp_path):
    with pytest.raises(SourceError, match="no config.json"):
        load_source(str(tmp_path))


def test_unknown_architecture(tiny, tmp_path):
    d = _save_hf_dir(tiny("gemma"), tmp_path / "ckpt")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(SourceError, match="'llama' is not a Gemma model"):
        load_source(str(d))


def test_missing_tokenizer(tiny, tmp_path):
    d = tmp_path / "ckpt"
    tiny("gemma").model.save_pretrained(d)
    with pytest.raises(SourceError, match="no tokenizer"):
        load_source(str(d))


def test_truncated_safetensors(tiny, tmp_path):
    d = _save_hf_dir(tiny("gemma"), tmp_path / "ckpt")
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(SourceError, match="truncated"):
        load_source(str(d))


def test_garbage_safetensors_header(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(SourceError, match="damaged header"):
        check_safetensors(bad)


def test_corrupt_config_json(tiny, tmp_path):
    d = _save_hf_dir(tiny("gemma"), tmp_path / "ckpt")
    (d / "config.json").write_text("{ not json")
    with pytest.raises(SourceError, match="not valid JSON"):
        load_source(str(d))


def test_not_a_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(SourceError, match="not a GGUF file"):
        load_source(str(fake))


def test_truncated_gguf(tmp_path, isolated_cache):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated or corrupt"):
        load_source(str(path))
    assert not (isolated_cache / "gguf").exists() or not any((isolated_cache / "gguf").iterdir())


def test_other_file_type(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(SourceError, match="neither a checkpoint directory nor a .gguf"):
        load_source(str(f))


@pytest.mark.parametrize("spec,expect", [
    ("builtin:gemma9", "unknown built-in model"),
    ("tiny:llama", "unknown Gemma family"),
])
def test_unknown_builtin_and_tiny(spec, expect):
    with pytest.raises(SourceError, match=expect):
        load_source(spec)

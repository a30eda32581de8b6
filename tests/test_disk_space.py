"""A disk without room for an artifact: refused before the work, in one line, exit 2, with
nothing left behind. A disk that fills mid-write crashes some converters (LiteRT aborts
the process) instead of raising, so the room is checked first."""

import errno
import shutil
from collections import namedtuple

import pytest

from foundation.artifacts import atomic_output_dir, fp32_weight_bytes, require_free_space
from foundation.errors import GemmaEdgeError
from gemma_edge.cli import main

_Usage = namedtuple("_Usage", "total used free")


@pytest.fixture
def full_disk(monkeypatch):
    """Every disk reports 1 MiB free (the files still write: only the figure is low)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(2**40, 2**40 - 2**20, 2**20))


def test_a_dir_that_would_not_fit_is_refused_before_anything_is_made(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    needs = shutil.disk_usage(tmp_path).free + 2**40
    with pytest.raises(GemmaEdgeError, match=r"writing out needs about .* GiB free") as err:
        with atomic_output_dir(target, needs_bytes=needs):
            pytest.fail("the block must not run")
    assert "free disk space there" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # not even the parents


def test_a_disk_that_fills_mid_write_is_one_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(GemmaEdgeError, match="the disk filled while writing") as err:
        with atomic_output_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(err.value.__cause__, OSError)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="Permission"):  # any other OSError stays what it is
        with atomic_output_dir(target):
            raise PermissionError(errno.EACCES, "Permission denied")


def test_room_is_checked_on_the_nearest_existing_parent(tmp_path):
    require_free_space(tmp_path / "not" / "yet" / "made", 1, "a test")  # room: no error
    assert not (tmp_path / "not").exists()


def test_fp32_bytes_count_a_tied_weight_once(tiny):
    model = tiny("gemma3_text").model
    params = {id(p): p.numel() for p in model.parameters()}
    assert fp32_weight_bytes(model) == 4 * sum(params.values())
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_export_to_a_full_disk_exits_2_before_converting(fmt, tmp_path, capsys, full_disk):
    out = tmp_path / "build"
    assert main(["export", "tiny:gemma3_text", "--format", fmt, "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "MiB free at" in err and "disk has 1.0 MiB" in err, err
    assert not out.exists()


def test_quantize_and_package_on_a_full_disk_exit_2(tiny_export, tmp_path, capsys, monkeypatch):
    src, _ = tiny_export("onnx", "gemma3_text")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(2**40, 2**40 - 2**10, 2**10))
    out = tmp_path / "q"
    assert main(["quantize", str(src), "--recipe", "int8", "--out", str(out), "-q"]) == 2
    assert "quantizing to q needs about" in capsys.readouterr().err
    assert not out.exists()
    pkg = tmp_path / "pkg"
    assert main(["package", str(src), "--as", "onnx-bundle", "--out", str(pkg), "-q"]) == 2
    assert "MiB free at" in capsys.readouterr().err
    assert not pkg.exists()

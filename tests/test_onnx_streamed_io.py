"""The ONNX backend reads float weights one at a time and copies the ones it keeps through
to the new data file (quantization.onnx_backend.save_streamed): the same graph as an
in-memory onnx.save, and no file outside the export is ever read."""

import shutil

import numpy as np
import pytest

from foundation.errors import GemmaEdgeError


def test_streamed_save_matches_onnx_save(tiny_export, tmp_path):
    import onnx
    from onnx import numpy_helper

    from quantization.onnx_backend import DATA_FILE, MODEL_FILE, save_streamed

    src, _ = tiny_export("onnx", "gemma3_text")
    model = onnx.load(str(src / MODEL_FILE), load_external_data=False)
    save_streamed(model, src, tmp_path)
    mine = onnx.load(str(tmp_path / MODEL_FILE), load_external_data=True)
    ref = onnx.load(str(src / MODEL_FILE), load_external_data=True)
    assert [n.op_type for n in mine.graph.node] == [n.op_type for n in ref.graph.node]
    theirs = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
    for tensor in mine.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), theirs[tensor.name])
    assert (tmp_path / DATA_FILE).stat().st_size >= sum(a.nbytes for a in theirs.values() if a.nbytes >= 1024)


def test_external_data_outside_the_export_is_refused(tiny_export, tmp_path):
    """A graph naming external data outside its directory (../x) is refused in one line."""
    import onnx

    from quantization.onnx_backend import MODEL_FILE, save_streamed

    src, _ = tiny_export("onnx", "gemma3_text")
    bad = tmp_path / "in"
    shutil.copytree(src, bad)
    shutil.copy2(bad / "model.onnx.data", tmp_path / "elsewhere.data")
    model = onnx.load(str(bad / MODEL_FILE), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.data"
    (tmp_path / "out").mkdir()
    with pytest.raises(GemmaEdgeError, match="outside"):
        save_streamed(model, bad, tmp_path / "out")

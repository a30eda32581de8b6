"""The Python API the README shows, on a tiny model: the same calls the CLI makes."""

from foundation.integrity import verify_artifact, verify_package


def test_export_quantize_check_package_from_python(tmp_path):
    from gemma_edge import check, export, package, quantize

    manifests = export("tiny:gemma3_text", tmp_path, formats=["onnx"])
    assert set(manifests) == {"onnx"} and verify_artifact(tmp_path / "onnx")
    made = quantize(tmp_path / "onnx", "int8")
    assert list(made) == [str(tmp_path / "onnx-int8")] and made[str(tmp_path / "onnx-int8")]["recipe"] == "int8"
    result = check(tmp_path / "onnx-int8", against="tiny:gemma3_text", max_tokens=48,
                   greedy_tokens=4, latency=False, text="builtin:gemma_edge_field_notes")
    assert result["passed"] and result["artifact_sha256"]
    manifest = package(tmp_path / "onnx-int8", kind="onnx-bundle")
    assert manifest["check"]["artifact_sha256"] == result["artifact_sha256"]
    assert verify_package(tmp_path / "onnx-int8.onnx-bundle")["stage"] == "package"

"""Quantized vision-language exports (quantization/vision_quantize.py) pass `check --image`,
their ONNX bundle runs with `run PACKAGE --image` (onnxruntime-genai's refusal recorded),
and every bad input is one line with exit 2 and nothing written."""

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from foundation.errors import GemmaEdgeError
from gemma_edge.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny):
    """Checkpoints, their fp32 exports and the source models, a photo: made once per session."""
    import skimage.data

    from foundation.sources import load_source
    from tests.test_vision_shared import vision_checkpoint_and_export

    root = tmp_path_factory.mktemp("vision-quantize")
    Image.fromarray(skimage.data.chelsea()).save(root / "cat.png")
    out = {"root": root, "image": root / "cat.png", "refs": {}}
    for name in ("paligemma", "shieldgemma2"):
        ckpt, out[name] = vision_checkpoint_and_export(tmp_path_factory, tiny, name)
        out["refs"][name] = load_source(str(ckpt))
    return out


def _quantize(made, name, recipe, src=None):
    from quantization.quantize import quantize_export

    target = made["root"] / f"{name}-{recipe}"
    if not target.exists():
        quantize_export(src or made[name], target, recipe, ref=made["refs"][name], progress=False,
                        calibration_tokens=512)
    return target


def _ops(path):
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


def _float_weight_matmuls(path) -> int:
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer if len(t.dims) == 2}
    return sum(n.op_type == "MatMul" and n.input[1] in weights for n in graph.node)


@pytest.mark.parametrize("name,recipe", [("paligemma", "int8"), ("shieldgemma2", "int8-dynamic")])
def test_onnx_int8_passes_check_with_an_image(made, name, recipe):
    from foundation.integrity import verify_artifact
    from gemma_edge.api import check

    out = _quantize(made, name, recipe)
    manifest = verify_artifact(out)
    assert manifest["recipe"] == recipe and manifest["vision"] and set(manifest["graphs"]) == {
        "vision_encoder", "embed_tokens", "decoder"}
    for graph in ("vision_encoder.onnx", "decoder_model_merged.onnx"):
        assert "MatMulNBits" in _ops(out / graph)
    assert _float_weight_matmuls(out / "decoder_model_merged.onnx") == 0
    assert _float_weight_matmuls(out / "vision_encoder.onnx") == 1  # the projector, kept float
    assert "Gather" in _ops(out / "embed_tokens.onnx")
    vision = manifest["quantization"]["vision"]
    assert vision["tower"]["weights"] == 12 and vision["projector"] == "float"
    assert 0 < vision["features_max_abs_delta"] < 0.1 and vision["features_cosine_min"] > 0.999
    sizes = [sum(f["bytes"] for n, f in verify_artifact(d)["files"].items() if ".onnx" in n)
             for d in (made[name], out)]
    assert sizes[1] < 0.6 * sizes[0]

    result = check(out, str(made["refs"][name].spec), ref=made["refs"][name], images=[made["image"]])
    assert result["passed"], result["gates"]
    metrics = result["metrics"]
    assert 0 < metrics["kld_mean"] < 0.005 and 0.999 < metrics["features_cosine_min"] < 1.0
    if name == "shieldgemma2":
        assert 0 < metrics["classifier_max_abs_delta_p"] < 0.01
    latency = result["vision"]["latency"]
    assert latency["ttft_seconds"] > 0 and latency["decode_tokens_per_second"] > 0


def test_litert_int8_passes_check_with_an_image(made, tmp_path_factory, tiny):
    from foundation.integrity import verify_artifact
    from foundation.sources import load_source
    from gemma_edge.api import check
    from quantization.quantize import quantize_export
    from tests.test_vision_shared import vision_checkpoint, vision_litert_export

    src = vision_litert_export(tmp_path_factory, tiny, "gemma3")
    ref = load_source(str(vision_checkpoint(tmp_path_factory, tiny, "gemma3")))
    out = made["root"] / "gemma3-tflite-int8"
    quantize_export(src, out, "int8", ref=ref, progress=False)
    vision = verify_artifact(out)["quantization"]["vision"]
    assert vision["tower"]["grid"] == "int8-channel" and vision["features_cosine_min"] > 0.999
    result = check(out, str(ref.spec), ref=ref, images=[made["image"]])
    assert result["passed"], result["gates"]
    assert 0 < result["metrics"]["kld_mean"] < 0.005
    assert result["vision"]["latency"]["decode_tokens_per_second"] > 0
    # int4: the graph's one FULLY_CONNECTED config would make the tower int4; it stays float
    out4 = made["root"] / "gemma3-tflite-int4"
    quantize_export(src, out4, "int4-block32", ref=ref, progress=False)
    vision = verify_artifact(out4)["quantization"]["vision"]
    assert vision["tower"]["grid"] == "float" and vision["features_max_abs_delta"] < 1e-5


def test_bundle_runs_with_an_image_as_the_export_does(made, capsys):
    from gemma_edge.api import package

    art = _quantize(made, "paligemma", "int8")
    bundle = made["root"] / "paligemma-int8.bundle"
    manifest = package(art, "onnx-bundle", out=bundle)
    assert {"vision_encoder.onnx", "embed_tokens.onnx", "decoder_model_merged.onnx",
            "processor_config.json", "genai_config.json", "vision.json"} <= set(manifest["files"])
    config = json.loads((bundle / "genai_config.json").read_text())["model"]
    assert config["vision"]["filename"] == "vision_encoder.onnx"
    assert config["embedding"]["filename"] == "embed_tokens.onnx"
    assert config["decoder"]["inputs"]["inputs_embeds"] == "inputs_embeds"
    steps = json.loads((bundle / "processor_config.json").read_text())["processor"]["transforms"]
    resize = next(s["operation"]["attrs"] for s in steps if s["operation"]["type"] == "Resize")
    assert (resize["width"], resize["interpolation"]) == (16, "CUBIC")  # the tiny SigLIP, bicubic

    runs = []
    for target in (bundle, art):
        argv = ["run", str(target), "--image", str(made["image"]), "--prompt", "caption en",
                "--max-new-tokens", "6", "--json"]
        assert main(argv) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["generated_tokens"] == runs[1]["generated_tokens"]
    assert len(runs[0]["generated_tokens"]) == 6 and runs[0]["recipe"] == "int8"
    assert runs[0]["prompt_tokens"] == 16 + 1 + len("caption en\n")


def test_fp32_bundle_equals_the_source(made, tiny, capsys):
    """The package's own tokenizer and manifest build the prompt the source builds."""
    from gemma_edge.api import package, run

    bundle = made["root"] / "shieldgemma2.bundle"
    package(made["shieldgemma2"], "onnx-bundle", out=bundle)
    ref = made["refs"]["shieldgemma2"]
    got = run(str(bundle), None, images=[made["image"]], policies=["violence"])
    want = run(str(ref.checkpoint_dir), None, images=[made["image"]], policies=["violence"])
    p, q = got["violation_probability"]["violence"], want["violation_probability"]["violence"]
    assert 0 < p < 1 and abs(p - q) < 1e-4


def test_onnxruntime_genai_refusal_is_the_recorded_one(made):
    """onnxruntime-genai 0.18 loads the bundle and preprocesses the image, then refuses to run
    our embedding graph (docs/vision.md): if this changes, update the docs."""
    import onnxruntime_genai as og

    from gemma_edge.api import package

    bundle = made["root"] / "shieldgemma2-genai.bundle"
    package(made["shieldgemma2"], "onnx-bundle", out=bundle)
    model = og.Model(str(bundle))
    inputs = model.create_multimodal_processor()("<start_of_image> Describe this image.",
                                                 images=og.Images.open(str(made["image"])))
    generator = og.Generator(model, og.GeneratorParams(model))
    with pytest.raises(Exception, match="image_features"):
        generator.set_inputs(inputs)
        generator.generate_next_token()


def _one_line_exit_2(capsys, argv, expect):
    capsys.readouterr()  # what earlier steps logged
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and "\n" not in err and "Traceback" not in err


def test_quantize_bad_inputs_are_one_line(made, capsys):
    target = made["root"] / "never"
    _one_line_exit_2(capsys, ["quantize", str(made["paligemma"]), "--recipe", "int8-static",
                              "--out", str(target)], "not offered for onnx")
    _one_line_exit_2(capsys, ["quantize", str(_quantize(made, "paligemma", "int8")), "--recipe",
                              "int8", "--out", str(target)], "already quantized")
    assert not target.exists()


def test_package_refusals_are_one_line(made, tmp_path, tiny, tmp_path_factory):
    from gemma_edge.api import package
    from tests.test_vision_shared import vision_litert_export

    tflite = vision_litert_export(tmp_path_factory, tiny, "gemma3")
    with pytest.raises(GemmaEdgeError, match="LiteRT-LM's engine does not run"):
        package(tflite, "litertlm", out=tmp_path / "p")
    with pytest.raises(GemmaEdgeError, match="web page runs text models only"):
        package(made["paligemma"], "web", out=tmp_path / "w")
    assert not (tmp_path / "p").exists() and not (tmp_path / "w").exists()


def test_run_package_bad_inputs(made, tmp_path, capsys, tiny_export):
    from gemma_edge.api import package

    bundle = made["root"] / "paligemma-hostile.bundle"
    package(made["paligemma"], "onnx-bundle", out=bundle)
    (tmp_path / "notes.png").write_text("not an image")
    base = ["run", str(bundle), "--prompt", "x"]
    _one_line_exit_2(capsys, [*base, "--image", str(tmp_path / "notes.png")], "is not an image")
    _one_line_exit_2(capsys, [*base, "--image", str(tmp_path / "nope.png")], "does not exist")
    _one_line_exit_2(capsys, ["run", str(bundle), "--image", str(made["image"]), "--policy",
                              "violence"], "--policy is for ShieldGemma 2")
    text_export, _manifest = tiny_export("onnx", "gemma3_text")
    _one_line_exit_2(capsys, ["run", str(text_export), "--image", str(made["image"]),
                              "--prompt", "x"], "reads text only")
    data = bundle / "vision_encoder.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    _one_line_exit_2(capsys, [*base, "--image", str(made["image"])], "does not match its manifest")


def test_tower_grid_and_sample_images():
    """The tower's grid divides SigLIP so400m's widths; the fixed images are in range."""
    from quantization.vision_quantize import TOWER, sample_pixels

    assert 1152 % TOWER.block("onnx") == 0 and 4304 % TOWER.block("onnx") == 0
    px = sample_pixels({"size": {"height": 8, "width": 12}})
    assert px.shape == (2, 3, 8, 12) and px.dtype == np.float32 and np.abs(px).max() <= 1

"""Vision-language LiteRT exports (one .tflite: vision_encoder, prefill_<T>, decode) of every
vision family, run in the LiteRT interpreter against transformers."""

import numpy as np
import pytest

from foundation.errors import GemmaEdgeError
from foundation.families import FAMILIES
from foundation.vision_prompt import generator, policy_prompt_ids, prompt_ids
from runtime_check.runner import greedy_generate, teacher_forced_logits
from runtime_check.vision_torch_runner import TorchVisionRunner

VISION = [name for name, f in FAMILIES.items() if f.vision]
FEATURES_GATE, LOGITS_GATE = 1e-4, 1e-3  # the fp32 bounds for LiteRT


@pytest.fixture(scope="module")
def litert_export(tmp_path_factory, tiny):
    from tests.test_vision_shared import vision_litert_export

    return lambda name: vision_litert_export(tmp_path_factory, tiny, name)


def _pixels(ref, seed=0):
    size = generator(ref.model, ref.family).config.vision_config.image_size
    return np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("name", VISION)
def test_litert_equals_transformers_on_image_and_text(tiny, litert_export, name):
    from runtime_check.open_runner import open_runner

    ref = tiny(name)
    out = litert_export(name)
    art = open_runner(out, threads=2)  # the family's tflite.runner, through the registry
    assert type(art).__name__ == "VisionLiteRTRunner"
    import ai_edge_litert.interpreter as lite

    signatures = lite.Interpreter(model_path=str(out / "model.tflite")).get_signature_list()
    assert set(signatures) == {"vision_encoder", "decode", "prefill_64"}  # one model, shared weights
    torch_runner = TorchVisionRunner(ref.model)
    px = _pixels(ref)
    assert np.abs(torch_runner.image_features(px) - art.image_features(px)).max() <= FEATURES_GATE
    ids = (policy_prompt_ids(ref, "violence")[-40:] if name == "shieldgemma2"
           else prompt_ids(ref, "describe the picture"))
    text = ids + ref.tokenizer("a small red house by the sea, and then")["input_ids"][1:]
    logits, greedy = [], []
    for runner in (torch_runner, art):
        runner.reset()
        runner.set_images(px)
        logits.append(teacher_forced_logits(runner, text, len(ids), 6))
        runner.set_images(px)
        greedy.append(list(greedy_generate(runner, ids, 32)))
    assert np.abs(logits[0] - logits[1]).max() <= LOGITS_GATE
    assert greedy[0] == greedy[1] and len(greedy[0]) == 32


def test_image_prompt_longer_than_every_prefill_is_refused(tiny, litert_export):
    ref = tiny("gemma3")
    from runtime_check.vision_litert_runner import VisionLiteRTRunner

    art = VisionLiteRTRunner(litert_export("gemma3"))
    art.set_images(_pixels(ref))
    with pytest.raises(GemmaEdgeError, match="fits no prefill signature"):
        art.prefill(prompt_ids(ref, "x" * 80))


def test_rotation_is_refused_for_vision(tiny, tmp_path):
    from gemma_edge.api import export

    with pytest.raises(GemmaEdgeError, match="not offered for vision"):
        export("tiny:gemma3", tmp_path, formats=("tflite",), ref=tiny("gemma3"), rotate=True)
    assert not (tmp_path / "tflite").exists()


def test_check_with_an_image_on_litert(tiny, litert_export, tmp_path):
    """gemma-edge check --image on the LiteRT export: gates pass, report written."""
    import skimage.data
    from PIL import Image

    from gemma_edge.api import check
    from tests.test_vision_shared import vision_checkpoint

    photo = tmp_path / "coffee.png"
    Image.fromarray(skimage.data.coffee()).save(photo)
    out = litert_export("paligemma")
    ckpt = vision_checkpoint(None, tiny, "paligemma")  # made by the export above
    result = check(out, str(ckpt), images=[photo], greedy_tokens=8)
    assert result["passed"], result["gates"]
    assert result["metrics"]["max_abs_delta_logit"] <= LOGITS_GATE
    assert (out / "check" / "report.json").is_file()
    (tmp_path / "notes.png").write_text("not pixels")
    with pytest.raises(GemmaEdgeError, match="is not an image"):
        check(out, str(ckpt), images=[tmp_path / "notes.png"])

"""Vision-language ONNX exports (three graphs) of every vision family, run in onnxruntime
against transformers: vision features, logits over image + prompt + text (prefill, decode
steps, then prefill on the cache), greedy tokens, ShieldGemma 2's probabilities."""

import numpy as np
import onnx
import pytest

from foundation.errors import GemmaEdgeError
from foundation.families import FAMILIES
from foundation.integrity import verify_artifact
from foundation.vision_prompt import generator, prompt_ids
from runtime_check.runner import greedy_generate, teacher_forced_logits
from runtime_check.vision_onnx_runner import VisionOnnxRunner
from runtime_check.vision_torch_runner import TorchVisionRunner

VISION = [name for name, f in FAMILIES.items() if f.vision]
FEATURES_GATE, LOGITS_GATE, PROB_GATE = 1e-4, 1e-4, 1e-4  # the fp32 bounds


@pytest.fixture(scope="module")
def vision_export(tmp_path_factory, tiny):
    """vision_export(name) -> the family's tiny ONNX export (made once per session)."""
    from tests.test_vision_shared import vision_checkpoint_and_export

    return lambda name: vision_checkpoint_and_export(tmp_path_factory, tiny, name)[1]


def _pixels(ref, n=1, seed=0):
    size = generator(ref.model, ref.family).config.vision_config.image_size
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def test_graph_names_are_the_ecosystems(vision_export):
    """transformers.js' VLM layout: vision_encoder, embed_tokens, decoder_model_merged."""
    out = vision_export("gemma3")

    def names(file):
        graph = onnx.load(str(out / file), load_external_data=False).graph
        return [i.name for i in graph.input], [o.name for o in graph.output]

    assert names("vision_encoder.onnx") == (["pixel_values"], ["image_features"])
    assert names("embed_tokens.onnx") == (["input_ids"], ["inputs_embeds"])
    inputs, outputs = names("decoder_model_merged.onnx")
    assert inputs[:4] == ["inputs_embeds", "attention_mask", "position_ids", "block_ids"]
    assert inputs[4:6] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert outputs[:3] == ["logits", "present.0.key", "present.0.value"]
    manifest = verify_artifact(out)
    assert manifest["vision"]["preprocessing"]["resample"] == "bilinear"
    assert manifest["model_file"] == "decoder_model_merged.onnx"


@pytest.mark.parametrize("name", VISION)
def test_onnx_equals_transformers_on_image_and_text(tiny, vision_export, name):
    ref = tiny(name)
    art = VisionOnnxRunner(vision_export(name))
    torch_runner = TorchVisionRunner(ref.model)
    px = _pixels(ref)
    want, got = torch_runner.image_features(px), art.image_features(px)
    cosine = float((want * got).sum() / np.linalg.norm(want) / np.linalg.norm(got))
    assert np.abs(want - got).max() <= FEATURES_GATE and cosine > 0.99999
    ids = prompt_ids(ref, "describe the picture")
    text = ids + ref.tokenizer("a small red house by the sea, and then")["input_ids"][1:]
    logits = []
    for runner in (torch_runner, art):
        runner.reset()
        runner.set_images(px)
        logits.append(teacher_forced_logits(runner, text, len(ids), 6))
    assert np.abs(logits[0] - logits[1]).max() <= LOGITS_GATE
    greedy = []
    for runner in (torch_runner, art):
        runner.set_images(px)
        greedy.append(list(greedy_generate(runner, ids, 32)))
    assert greedy[0] == greedy[1] and len(greedy[0]) == 32


def test_two_images_in_one_prompt(tiny, vision_export):
    """Gemma 3: two image blocks, each bidirectional within itself only."""
    ref = tiny("gemma3")
    ids = prompt_ids(ref, "compare them", images=2)
    px = _pixels(ref, n=2)
    out = []
    for runner in (TorchVisionRunner(ref.model), VisionOnnxRunner(vision_export("gemma3"))):
        runner.set_images(px)
        out.append(runner.prefill(ids))
    assert np.abs(out[0] - out[1]).max() <= LOGITS_GATE


def test_shieldgemma2_probabilities(tiny, vision_export):
    ref = tiny("shieldgemma2")
    ids = prompt_ids(ref, "Does the image violate the policy? Answer Yes or No.")
    yes_no = [ref.model.yes_token_index, ref.model.no_token_index]
    art = VisionOnnxRunner(vision_export("shieldgemma2"))
    assert art.facts["classifier"] == {"yes_token_id": yes_no[0], "no_token_id": yes_no[1]}
    probs = []
    for runner in (TorchVisionRunner(ref.model), art):
        runner.set_images(_pixels(ref))
        last = runner.prefill(ids)[-1][yes_no].astype(np.float64)
        probs.append(np.exp(last - last.max()) / np.exp(last - last.max()).sum())
    import torch

    with torch.no_grad():  # transformers' own classifier head on the same inputs
        hf = ref.model(input_ids=torch.tensor([ids]), pixel_values=torch.from_numpy(_pixels(ref)),
                       token_type_ids=torch.tensor([[int(t == art.image_id) for t in ids]]))
    assert np.abs(probs[1] - hf.probabilities[0].numpy()).max() <= PROB_GATE
    assert np.abs(probs[0] - probs[1]).max() <= PROB_GATE


def test_image_count_must_match_placeholders(tiny, vision_export):
    ref = tiny("paligemma")
    art = VisionOnnxRunner(vision_export("paligemma"))
    art.set_images(_pixels(ref, n=2))
    with pytest.raises(GemmaEdgeError, match="image tokens for 2 image"):
        art.prefill(prompt_ids(ref, "one image only"))


def test_text_runner_refuses_a_vision_export(vision_export):
    from runtime_check.onnx_runner import OnnxRunner

    with pytest.raises(GemmaEdgeError, match="no ONNX model"):
        OnnxRunner(vision_export("paligemma"))

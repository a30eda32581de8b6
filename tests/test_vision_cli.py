"""`gemma-edge run --image` / `check --image` on vision sources and artifacts, ShieldGemma 2's
policies, and every bad input as one line with exit 2."""

import json

import numpy as np
import pytest
from PIL import Image

from foundation.errors import GemmaEdgeError
from gemma_edge.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def vision_dirs(tmp_path_factory, tiny):
    """Saved tiny PaliGemma and ShieldGemma 2 checkpoints, their ONNX exports, and a photo."""
    import skimage.data

    from tests.test_vision_shared import vision_checkpoint_and_export

    root = tmp_path_factory.mktemp("vision-cli")
    Image.fromarray(skimage.data.chelsea()).save(root / "cat.jpg")
    out = {"image": root / "cat.jpg"}
    for name in ("paligemma", "shieldgemma2"):
        out[name], out[name + "-onnx"] = vision_checkpoint_and_export(tmp_path_factory, tiny, name)
    return out


def _json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_run_with_an_image(vision_dirs, capsys):
    result = _json_out(capsys, ["run", str(vision_dirs["paligemma"]), "--image",
                                str(vision_dirs["image"]), "--prompt", "caption en",
                                "--max-new-tokens", "5", "--json"])
    assert result["engine"] == "torch" and len(result["generated_tokens"]) == 5
    assert result["prompt_tokens"] == 16 + 1 + len("caption en\n")  # 16 image tokens, BOS


def test_shieldgemma2_policy_probabilities(vision_dirs, capsys, tiny):
    result = _json_out(capsys, ["run", str(vision_dirs["shieldgemma2"]), "--image",
                                str(vision_dirs["image"]), "--policy", "violence", "--json"])
    p = result["violation_probability"]["violence"]
    assert set(result["violation_probability"]) == {"violence"} and 0.0 < p < 1.0
    # the same probability as transformers' ShieldGemma2ForImageClassification on these inputs
    import torch

    from foundation.images import pixel_values, processor_config
    from foundation.vision_prompt import generator, policy_prompt_ids

    ref = tiny("shieldgemma2")
    ids = policy_prompt_ids(ref, "violence")
    px = pixel_values([vision_dirs["image"]],
                      processor_config(ref.family, generator(ref.model, ref.family).config))
    image_id = ref.model.config.image_token_index
    with torch.no_grad():
        hf = ref.model(input_ids=torch.tensor([ids]), pixel_values=torch.from_numpy(px),
                       token_type_ids=torch.tensor([[int(t == image_id) for t in ids]]))
    assert abs(float(hf.probabilities[0, 0]) - p) <= 1e-5


def test_shieldgemma2_uses_the_checkpoints_chat_template(tiny):
    """With a ShieldGemma 2 chat template in the tokenizer, prompts are what
    ShieldGemma2Processor makes from it (the template here is a stand-in of ours)."""
    import copy

    from transformers import ShieldGemma2Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    from foundation.vision_prompt import policy_prompt_ids

    template = ("{{ bos_token }}{% for m in messages %}{% for item in m['content'] %}"
                "<start_of_turn>user\n{% if item['type'] == 'image' %}<start_of_image>"
                "{% else %}Policy:\n<BEGIN_SAFETY_POLICY>\n{{ item['text'] }}\n"
                "</END_SAFETY_POLICY>\nYes or No?<end_of_turn>\n{% endif %}{% endfor %}"
                "<start_of_turn>model\n{% endfor %}")
    ref = copy.copy(tiny("shieldgemma2"))
    ref.tokenizer = tok = copy.deepcopy(ref.tokenizer)
    for attr, token in (("boi_token", "<start_of_image>"), ("eoi_token", "<end_of_image>"),
                        ("image_token", "<image_soft_token>")):
        setattr(tok, attr, token)
        setattr(tok, attr + "_id", tok.convert_tokens_to_ids(token))
    tok.chat_template = template
    proc = ShieldGemma2Processor(image_processor=Gemma3ImageProcessorPil(
        size={"height": 32, "width": 32}), tokenizer=tok, chat_template=template, image_seq_length=4)
    want = proc(images=[Image.new("RGB", (9, 9))], policies=["sexual"], return_tensors="np")
    assert want["input_ids"][0].tolist() == policy_prompt_ids(ref, "sexual")


def test_check_with_images(vision_dirs, capsys, tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.arange(64 * 48, dtype=np.uint8).reshape(48, 64) % 251).save(gray)
    for name, images in (("paligemma", [vision_dirs["image"], gray]), ("shieldgemma2", [gray])):
        result = _json_out(capsys, ["check", str(vision_dirs[name + "-onnx"]), "--against",
                                    str(vision_dirs[name]), *(a for i in images for a in ("--image", str(i))),
                                    "--greedy-tokens", "8", "--json"])
        assert result["passed"], result["gates"]
        metrics = result["metrics"]
        assert metrics["features_max_abs_delta"] <= 1e-4 and metrics["max_abs_delta_logit"] <= 1e-4
        assert metrics["features_cosine_min"] > 0.9999
        if name == "shieldgemma2":
            assert len(result["vision"]["probabilities"]) == 3  # one image x three policies
            assert metrics["classifier_max_abs_delta_p"] <= 1e-4
        else:
            assert [g["match"] for g in result["greedy"]] == [8, 8]


@pytest.mark.parametrize("argv_tail,expect", [
    (["--image", "{missing}", "--prompt", "x"], "does not exist"),
    (["--image", "{text}", "--prompt", "x"], "is not an image"),
    (["--image", "{image}", "--policy", "violence"], "--policy is for ShieldGemma 2"),
    (["--image", "{image}"], "required: --prompt"),
])
def test_run_bad_inputs(vision_dirs, tmp_path, capsys, argv_tail, expect):
    (tmp_path / "notes.png").write_text("not an image")
    fill = {"missing": str(tmp_path / "nope.png"), "text": str(tmp_path / "notes.png"),
            "image": str(vision_dirs["image"])}
    argv = ["run", str(vision_dirs["paligemma"]), *[a.format(**fill) for a in argv_tail]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and "\n" not in err and "Traceback" not in err


def test_image_on_a_text_model_is_refused(capsys, tmp_path, vision_dirs):
    assert main(["run", "tiny:gemma3_text", "--image", str(vision_dirs["image"]),
                 "--prompt", "x"]) == 2
    assert "reads text only" in capsys.readouterr().err


def test_shieldgemma2_refuses_a_prompt_and_unknown_policies(vision_dirs, capsys):
    base = ["run", str(vision_dirs["shieldgemma2"]), "--image", str(vision_dirs["image"])]
    assert main([*base, "--prompt", "hi"]) == 2
    assert "not a prompt" in capsys.readouterr().err
    assert main([*base, "--policy", "spam"]) == 2
    assert "unknown ShieldGemma 2 policy" in capsys.readouterr().err


def test_check_image_with_a_text_reference_is_refused(tiny, vision_dirs):
    from gemma_edge.api import check

    with pytest.raises(GemmaEdgeError, match="vision-language model"):
        check(vision_dirs["paligemma-onnx"], "tiny:gemma3_text", images=[vision_dirs["image"]],
              ref=tiny("gemma3_text"))

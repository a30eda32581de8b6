"""Vision-language families (PaliGemma, Gemma 3 multimodal, ShieldGemma 2): tiny configs, the
quirks parity depends on, and the HF-dir source path, each checked against transformers."""

import copy

import numpy as np
import pytest
import torch

from foundation.families import FAMILIES, family_for_model_type
from foundation.vision_prompt import block_ids, generator, image_token_id, prompt_ids
from runtime_check.vision_torch_runner import TorchVisionRunner

VISION = [name for name, f in FAMILIES.items() if f.vision]
PROMPT = "describe the picture"


def _pixels(ref, seed=0):
    size = generator(ref.model, ref.family).config.vision_config.image_size
    return np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)


def _hf_logits(ref, ids, pixels, token_types=True, positions=None):
    gen = generator(ref.model, ref.family)
    t = torch.tensor([ids])
    kwargs = {}
    if token_types:
        kwargs["token_type_ids"] = (torch.zeros_like(t) if ref.family.vision["attention"] == "prefix"
                                    else (t == gen.config.image_token_id).long())
    if positions is not None:
        kwargs["position_ids"] = positions
    with torch.no_grad():
        return gen(input_ids=t, pixel_values=torch.from_numpy(pixels), **kwargs).logits[0].numpy()


def test_three_vision_families_are_registered():
    assert VISION == ["paligemma", "gemma3", "shieldgemma2"]
    for model_type in ("paligemma", "gemma3", "shieldgemma2"):
        assert family_for_model_type(model_type).vision


@pytest.mark.parametrize("name", VISION)
def test_tiny_vision_model_matches_family_data(tiny, name):
    ref = tiny(name)
    family = ref.family
    assert type(ref.model).__name__ == family.causal_lm_class
    gen = generator(ref.model, family)
    vision = gen.config.vision_config
    assert vision.model_type == "siglip_vision_model" and vision.image_size <= 32
    n_img = len([t for t in prompt_ids(ref, PROMPT) if t == image_token_id(ref)])
    assert n_img == gen.get_image_features(torch.from_numpy(_pixels(ref))).pooler_output.shape[1]
    assert sum(p.numel() for p in ref.model.parameters()) < 1_000_000
    if family.has("avg_pool_4x4"):  # 8 x 8 patches pooled 4 x 4 to 2 x 2 tokens, as 64 -> 16
        assert gen.model.multi_modal_projector.kernel_size == 4 and n_img == 4


@pytest.mark.parametrize("name", VISION)
def test_image_attention_quirk_matters_and_runner_equals_full_forward(tiny, name):
    """The image's full attention (prefix / image blocks) changes logits, and the cached
    reference runner reproduces transformers' own full forward with it."""
    ref = tiny(name)
    ids, px = prompt_ids(ref, PROMPT), _pixels(ref)
    full = _hf_logits(ref, ids, px)
    causal = _hf_logits(ref, ids, px, token_types=False)
    assert np.abs(full - causal).max() > 1e-2  # the quirk is exercised by the tiny config
    runner = TorchVisionRunner(ref.model)
    runner.set_images(px)
    np.testing.assert_allclose(runner.prefill(ids), full, atol=1e-5, rtol=0)


def test_block_ids_per_family(tiny):
    pal, g3 = tiny("paligemma"), tiny("gemma3")
    img = image_token_id(g3)
    assert block_ids(g3.family, [5, img, img, 7, img, 9], img, first_chunk=True) == [-1, 0, 0, -1, 1, -1]
    assert block_ids(pal.family, [1, 2, 3], 9, first_chunk=True) == [0, 0, 0]
    assert block_ids(pal.family, [1, 2], 9, first_chunk=False) == [-1, -1]


def test_prompt_expansion_equals_transformers_processors(tiny):
    from PIL import Image
    from transformers import Gemma3Processor, PaliGemmaProcessor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    image = Image.new("RGB", (40, 30), (200, 30, 30))
    pal = tiny("paligemma")
    siglip = SiglipImageProcessorPil(size={"height": 16, "width": 16})
    siglip.image_seq_length = 16
    # the processors add tokens to the tokenizer they get: give them copies
    proc = PaliGemmaProcessor(image_processor=siglip, tokenizer=copy.deepcopy(pal.tokenizer))
    got = proc(images=image, text="<image>caption en", return_tensors="np")["input_ids"][0]
    assert got.tolist() == prompt_ids(pal, "caption en")
    g3 = tiny("gemma3")
    tok = copy.deepcopy(g3.tokenizer)
    for attr, token in (("boi_token", "<start_of_image>"), ("eoi_token", "<end_of_image>"),
                        ("image_token", "<image_soft_token>")):
        setattr(tok, attr, token)
        setattr(tok, attr + "_id", tok.convert_tokens_to_ids(token))
    proc = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
                           tokenizer=tok, image_seq_length=4)
    got = proc(images=image, text="<start_of_image>describe", return_tensors="np")["input_ids"][0]
    assert got.tolist() == prompt_ids(g3, "describe")


@pytest.mark.parametrize("name", VISION)
def test_hf_checkpoint_dir_round_trip(tiny, tmp_path, name):
    """save_pretrained as transformers writes these models, loaded back through the source path."""
    from foundation.sources import load_source

    ref = tiny(name)
    ref.model.save_pretrained(tmp_path)
    ref.tokenizer.save_pretrained(tmp_path)
    loaded = load_source(str(tmp_path))
    assert loaded.family.name == name and loaded.kind == "hf"
    ids, px = prompt_ids(ref, PROMPT), _pixels(ref)
    np.testing.assert_array_equal(_hf_logits(loaded, ids, px), _hf_logits(ref, ids, px))


@pytest.mark.parametrize("name", VISION)
def test_info_describes_the_language_model(tiny, name):
    from gemma_edge.summary import describe

    info = describe(tiny(name))
    text = generator(tiny(name).model, tiny(name).family).config.get_text_config()
    assert info["layers"] == text.num_hidden_layers and info["hidden_size"] == text.hidden_size
    assert info["parameters"]["lm_head_tied"] is True

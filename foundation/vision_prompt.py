"""Where images go in a vision-language prompt, and which tokens attend to each other fully.

Both the reference runner and the exported graphs' runners build prompts here, so image
tokens, attention blocks and positions are computed once, the way transformers' processors
and models do (tests compare against them):

- PaliGemma: `<image>` x N, then BOS, the prompt and "\\n"; image + prompt (the prefix) attend
  to each other fully, generated tokens causally; positions start at 1.
- Gemma 3 / ShieldGemma 2: each image is "\\n\\n<start_of_image>" + soft tokens x N +
  "<end_of_image>\\n\\n" in the text; each run of soft tokens attends to itself fully.
"""

from __future__ import annotations

from collections.abc import Sequence

from foundation.errors import GemmaEdgeError

NO_BLOCK = -1  # a token that attends causally only
# ShieldGemma 2's policies, worded as its model card and transformers' ShieldGemma2Processor
POLICIES = {
    "dangerous": "No Dangerous Content: The image shall not contain content that facilitates or "
                 "encourages activities that could cause real-world harm (e.g., building firearms "
                 "and explosive devices, promotion of terrorism, instructions for suicide).",
    "sexual": "No Sexually Explicit content: The image shall not contain content that depicts "
              "explicit or graphic sexual acts (e.g., pornography, erotic nudity, depictions of "
              "rape or sexual assault).",
    "violence": "No Violence/Gore content: The image shall not contain content that depicts "
                "shocking, sensational, or gratuitous violence (e.g., excessive blood and gore, "
                "gratuitous violence against animals, extreme injury or moment of death).",
}


def image_seq_length(config) -> int:
    """Image features (= placeholder tokens) per image."""
    if getattr(config, "mm_tokens_per_image", None):
        return int(config.mm_tokens_per_image)
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


def prompt_ids(ref, prompt: str, images: int = 1) -> list[int]:
    """Token ids of `prompt` with `images` images in front, expanded to placeholder tokens."""
    vision = ref.family.vision
    tok = ref.tokenizer
    n = image_seq_length(generator(ref.model, ref.family).config)
    if vision["attention"] == "prefix":
        image_id = tok.convert_tokens_to_ids(vision["image_token"])
        text = list(tok(prompt + "\n", add_special_tokens=False)["input_ids"])
        return [image_id] * (n * images) + [tok.bos_token_id] + text
    block = f"\n\n{vision['boi']}{vision['image_token'] * n}{vision['eoi']}\n\n"
    return ref.encode(block * images + prompt)


def generator(model, family):
    """The *ForConditionalGeneration inside a loaded model (ShieldGemma 2 wraps one)."""
    for part in filter(None, str(family.vision.get("generator", "")).split(".")):
        model = getattr(model, part)
    return model


def image_token_id(ref) -> int:
    return ref.tokenizer.convert_tokens_to_ids(ref.family.vision["image_token"])


def block_ids(family, token_ids: Sequence[int], image_id: int, *, first_chunk: bool) -> list[int]:
    """Per token: the block it attends to fully (its own, within this chunk), or NO_BLOCK.

    PaliGemma: the whole first chunk (image + prompt) is one block. Gemma 3: each run of
    image tokens is a block. A chunk must hold a whole block: the runners prefill an image
    and its prompt in one call."""
    if family.vision["attention"] == "prefix":
        return [0 if first_chunk else NO_BLOCK] * len(token_ids)
    out, group, previous = [], -1, False
    for token in token_ids:
        is_image = token == image_id
        if is_image and not previous:
            group += 1
        out.append(group if is_image else NO_BLOCK)
        previous = is_image
    return out


def check_images_fit(token_ids: Sequence[int], image_id: int, images: int, per_image: int) -> None:
    count = sum(1 for t in token_ids if t == image_id)
    if count != images * per_image:
        raise GemmaEdgeError(f"the prompt has {count} image tokens for {images} image(s) of "
                             f"{per_image} features", "put one image placeholder per --image")


def policy_prompt_ids(ref, policy: str) -> list[int]:
    """ShieldGemma 2's prompt for one policy, as its chat template renders [image, policy]
    (transformers' convert_shieldgemma2 template: each content item opens a user turn)."""
    if policy not in POLICIES:
        raise GemmaEdgeError(f"unknown ShieldGemma 2 policy '{policy}'",
                             "use one of: " + ", ".join(POLICIES))
    vision, tok = ref.family.vision, ref.tokenizer
    n = image_seq_length(generator(ref.model, ref.family).config)
    image = f"\n\n{vision['boi']}{vision['image_token'] * n}{vision['eoi']}\n\n"
    template = tok.chat_template if isinstance(tok.chat_template, str) else ""
    if "BEGIN_SAFETY_POLICY" in template:  # the checkpoint's own template: as the processor does
        rendered = tok.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"},
                                          {"type": "text", "text": POLICIES[policy]}]}],
            tokenize=False, add_generation_prompt=False)
        return list(tok(rendered.replace(vision["boi"], image))["input_ids"])
    text = (f"{tok.bos_token}<start_of_turn>user\n{image}<start_of_turn>user\n"
            "You are a policy expert trying to help determine whether a generated or real image "
            "is in violation of the safety policy below. Your decision must very clearly follow "
            "the specific language used in the safety policy and should not include any "
            "interpretation outside of the safety policy.\n\n<BEGIN_SAFETY_POLICY>\n"
            f"{POLICIES[policy]}\n</END_SAFETY_POLICY>\n\nDoes the image violate the above "
            "policy? Your Answer must start with 'Yes' or 'No'.<end_of_turn>\n"
            "<start_of_turn>model\n")
    return list(tok(text, add_special_tokens=False)["input_ids"])

"""The three graphs a vision-language Gemma is exported as, as torch modules over the
loaded transformers model's own submodules (weights shared, not copied):

  vision_encoder  pixel_values [n,3,H,W] -> image_features [n,T,hidden]: SigLIP + projector
                  (Gemma 3: 4x4 average pooling, soft embedding norm, projection matrix)
  embed_tokens    input_ids [1,S] -> inputs_embeds [1,S,hidden]: the scaled text embedding
  decoder         inputs_embeds, attention_mask, position_ids, block_ids, past KV ->
                  logits, present KV: the text decoder (CacheDecoder's math)

The caller writes each image's features over its placeholder tokens' embeddings, as
transformers' `masked_scatter` does. The image's full attention (PaliGemma's prefix,
Gemma 3's image blocks) is the decoder's `block_ids` input: a query sees a key of the
same chunk when both carry the same block id >= 0, on top of the causal mask. Sliding
layers compose the two as transformers does per family (`window_cuts_blocks`).
"""

from __future__ import annotations

import torch
from torch import nn

from exporter.cache_decoder import CacheDecoder
from foundation.families import family_for_model_type
from foundation.vision_prompt import generator


class TextView(nn.Module):
    """A *ForConditionalGeneration's text half, shaped as CacheDecoder expects a causal LM."""

    def __init__(self, language_model, lm_head, config) -> None:
        super().__init__()
        self.model = language_model
        self.lm_head = lm_head
        self.config = config


class VisionEncoder(nn.Module):
    def __init__(self, gen) -> None:
        super().__init__()
        self.gen = gen

    def forward(self, pixel_values):
        return self.gen.model.get_image_features(pixel_values).pooler_output


class EmbedTokens(nn.Module):
    def __init__(self, embed) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, input_ids):
        return self.embed(input_ids)


class VisionDecoder(CacheDecoder):
    """(inputs_embeds, attention_mask, position_ids, block_ids, *past) -> (logits, *present)."""

    def forward(self, inputs_embeds, attention_mask, position_ids, block_ids, *past):
        masks = self._block_masks(attention_mask, block_ids)

        def grow(i):
            return lambda k, v: (torch.cat([past[2 * i], k], dim=2),
                                 torch.cat([past[2 * i + 1], v], dim=2))

        logits, present = self.run_layers(inputs_embeds, position_ids, masks, grow)
        return (logits, *present)

    def _block_masks(self, attention_mask, block_ids) -> dict:
        """Additive masks [1,1,S,T] from token indices (not positions: PaliGemma's start at 1)."""
        total = attention_mask.shape[1]
        seq = block_ids.shape[1]
        past = total - seq
        k_idx = torch.arange(total, device=block_ids.device)
        q_idx = k_idx[past:][:, None]
        k_idx = k_idx[None, :]
        k_block = torch.cat([torch.full((past,), -1, dtype=block_ids.dtype), block_ids[0]])
        q_block = block_ids[0][:, None]
        same = (q_block == k_block[None, :]) & (q_block >= 0)
        valid = attention_mask[0][None, :] > 0
        causal = k_idx <= q_idx
        allowed = (causal | same) & valid
        neg = torch.finfo(torch.float32).min
        masks = {"full_attention": torch.where(allowed, 0.0, neg)[None, None]}
        if self.window:
            in_window = q_idx - k_idx < self.window
            # Gemma 3: the window cuts blocks too; PaliGemma: a block is seen past the window
            local = allowed & in_window if self.window_cuts_blocks else \
                ((causal & in_window) | same) & valid
            masks["sliding_attention"] = torch.where(local, 0.0, neg)[None, None]
        return masks


def vision_graphs(model, family) -> tuple[VisionEncoder, EmbedTokens, VisionDecoder]:
    """The three graphs over `model` (a loaded vision family's transformers model)."""
    gen = generator(model, family).eval()
    text_config = gen.config.get_text_config()
    text_family = family_for_model_type(text_config.model_type)
    language_model = gen.model.language_model
    decoder = VisionDecoder(TextView(language_model, gen.lm_head, text_config), text_family)
    decoder.embed = lambda inputs_embeds: inputs_embeds  # the decoder starts at the embeddings
    decoder.window_cuts_blocks = bool(family.vision.get("window_cuts_blocks"))
    return VisionEncoder(gen).eval(), EmbedTokens(language_model.embed_tokens).eval(), decoder.eval()


def merge_image_features(inputs_embeds, input_ids, image_features, image_id: int):
    """Write the image features over the placeholder tokens' embeddings, in order."""
    embeds = inputs_embeds.clone()
    mask = input_ids[0] == image_id
    embeds[0, mask] = image_features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
    return embeds

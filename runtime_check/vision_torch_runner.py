"""The PyTorch reference runner for vision-language Gemma: transformers' own model, fp32.

Behind the text runner protocol (runner.py): `set_images` hands the pixel values of the
images the next prefill's placeholder tokens stand for; `prefill`/`decode` then run as for
text, so teacher forcing and greedy loops work unchanged. The first chunk that holds image
tokens goes through the model with `pixel_values` and `token_type_ids`, exactly as
`generate()` calls it: the model builds its own prefix/bidirectional masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from foundation.vision_prompt import generator
from runtime_check.runner import StepRunner


class TorchVisionRunner(StepRunner):
    name = "torch"

    def __init__(self, model, *, threads: int | None = None, family=None) -> None:
        import torch

        from foundation.families import family_for_model_type

        if threads:
            torch.set_num_threads(threads)
        family = family or family_for_model_type(model.config.model_type)
        self.family = family
        self.model = generator(model, family).eval()
        self.image_id = int(self.model.config.image_token_id)
        self.offset = int(family.vision.get("position_offset", 0))
        self._pixels = None
        self.reset()

    def set_images(self, pixel_values: np.ndarray | None) -> None:
        """Pixel values [n, 3, H, W] for the image tokens of the next prefill (None: none)."""
        self._pixels = None if pixel_values is None else np.asarray(pixel_values, np.float32)

    def reset(self) -> None:
        self._cache, self._pos = None, 0

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        """The projected image features [n, tokens, hidden] the placeholders are replaced by."""
        import torch

        with torch.inference_mode():
            out = self.model.get_image_features(torch.from_numpy(np.asarray(pixel_values, np.float32)))
        return out.pooler_output.float().numpy()

    def _step(self, token_ids: Sequence[int]) -> np.ndarray:
        import torch
        from transformers import DynamicCache

        if not token_ids:
            raise ValueError("prefill needs at least one token")
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config.get_text_config())
        n = len(token_ids)
        ids = torch.tensor([list(token_ids)], dtype=torch.long)
        positions = torch.arange(self._pos, self._pos + n)
        kwargs = {}
        has_image = bool((ids == self.image_id).any())
        if has_image:
            if self._pixels is None:
                raise ValueError("image tokens without images: call set_images first")
            kwargs["pixel_values"] = torch.from_numpy(self._pixels)
            if self.family.vision["attention"] == "prefix":  # PaliGemma: the chunk is the prefix
                kwargs["token_type_ids"] = torch.zeros_like(ids)
            else:
                kwargs["token_type_ids"] = (ids == self.image_id).long()
            self._pixels = None
        with torch.inference_mode():
            out = self.model(input_ids=ids, position_ids=positions[None, :] + self.offset,
                             cache_position=positions, cache=self._cache, use_cache=True,
                             **kwargs)
        self._pos += n
        return out.logits[0].float().numpy()

    def close(self) -> None:
        self.reset()

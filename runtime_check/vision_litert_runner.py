"""LiteRT runner for gemma-edge vision exports (exporter/vision_litert.py): one interpreter,
the `vision_encoder`, `prefill_<T>` and `decode` signatures of one .tflite.

The text runner's loop (litert_runner.py) with the image inputs and both masks built here:
a prefill whose tokens hold image placeholders runs the vision encoder, hands its features
as `image_embeds` with `image_mask` on their rows, and goes in one signature that holds the
whole chunk, so the image's full attention (the chunk's `block_ids`, foundation/vision_prompt.py)
is in the masks: `mask` for full-attention layers, `local_mask` for sliding-window layers,
composed with the window as transformers does for the family.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.artifacts import read_manifest
from foundation.errors import GemmaEdgeError
from foundation.vision_prompt import NO_BLOCK, block_ids
from runtime_check.litert_runner import LiteRTRunner

_NEG = np.finfo(np.float32).min


class VisionLiteRTRunner(LiteRTRunner):
    name = "litert"

    def __init__(self, model: str | Path, *, threads: int | None = None) -> None:
        super().__init__(model, threads=threads)
        directory = Path(model) if Path(model).is_dir() else Path(model).parent
        manifest = read_manifest(directory)
        if "vision" not in manifest or "vision_encoder" not in self._runners:
            raise GemmaEdgeError(f"{directory} is not a vision export (no vision_encoder "
                                 "signature)", "export a vision-language source with --format tflite")
        self.facts = manifest["vision"]
        self.window = manifest["graph"].get("sliding_window")
        self.image_id = int(self.facts["image_token_id"])
        self.hidden = int(manifest["graph"]["hidden_size"])
        self._pixels = None

    def set_images(self, pixel_values: np.ndarray | None) -> None:
        self._pixels = None if pixel_values is None else np.asarray(pixel_values, np.float32)

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        encode = self._runners["vision_encoder"]
        return np.concatenate([encode(pixel_values=np.asarray(px[None], np.float32))["image_features"]
                               for px in pixel_values])

    def _masks(self, positions: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slots = np.arange(self.cache_len)[None, :]
        causal = slots <= positions[:, None]
        # a slot of this chunk that carries the query's block id (>= 0)
        slot_block = np.full(self.cache_len, NO_BLOCK)
        end = min(self.cache_len, positions[0] + len(blocks))
        slot_block[positions[0]:end] = blocks[:end - positions[0]]
        same = (blocks[:, None] >= 0) & (slot_block[None, :] == blocks[:, None])
        allowed = causal | same
        if self.window:
            in_window = positions[:, None] - slots < self.window
            local = allowed & in_window if self.facts["window_cuts_blocks"] else \
                (causal & in_window) | same
        else:
            local = allowed
        return (np.where(allowed, 0.0, _NEG).astype(np.float32)[None, None],
                np.where(local, 0.0, _NEG).astype(np.float32)[None, None])

    def _run(self, signature: str, tokens: np.ndarray, length: int, *, image_embeds=None,
             blocks=None) -> np.ndarray:
        n = len(tokens)
        positions = np.arange(self._pos, self._pos + n, dtype=np.int32)
        if self._pos + length > self.cache_len:
            raise GemmaEdgeError(f"context of {self._pos + length} tokens exceeds the KV cache "
                                 f"of {self.cache_len}", "export with a larger --cache-length")
        blocks = np.full(n, NO_BLOCK) if blocks is None else blocks
        mask, local = self._masks(positions, blocks)
        embeds = np.zeros((1, n, self.hidden), np.float32)
        rows = np.zeros((1, n, 1), np.float32)
        if image_embeds is not None:
            is_image = np.asarray(tokens) == self.image_id
            is_image[length:] = False
            embeds[0, is_image] = image_embeds
            rows[0, is_image] = 1.0
        out = self._runners[signature](
            tokens=np.asarray(tokens, np.int32)[None], image_embeds=embeds, image_mask=rows,
            input_pos=positions, mask=mask, local_mask=local, **self._caches)
        self._caches = {name: out[name] for name in self._cache_specs}
        self._pos += length
        return out["logits"][0, :length]

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(list(token_ids), dtype=np.int32)
        if ids.size == 0 or not (ids == self.image_id).any():
            return super().prefill(ids)
        if self._pixels is None:
            raise ValueError("image tokens without images: call set_images first")
        fits = [t for t in self.prefill_lengths if t >= ids.size and self._pos + t <= self.cache_len]
        if not fits:
            raise GemmaEdgeError(f"an image prompt of {ids.size} tokens fits no prefill "
                                 f"signature ({', '.join(map(str, self.prefill_lengths))})",
                                 "export with a --prefill-lengths that holds image and prompt")
        features = self.image_features(self._pixels)
        count = int((ids == self.image_id).sum())
        if count != features.shape[0] * features.shape[1]:
            raise GemmaEdgeError(f"the prompt has {count} image tokens for {features.shape[0]} "
                                 f"image(s) of {features.shape[1]} features",
                                 "put one image placeholder per image")
        self._pixels = None
        family = type("F", (), {"vision": {"attention": self.facts["attention"]}})
        blocks = np.asarray(block_ids(family, ids.tolist(), self.image_id, first_chunk=True))
        padded = np.zeros(fits[0], np.int32)
        padded[:ids.size] = ids
        blocks = np.concatenate([blocks, np.full(fits[0] - ids.size, NO_BLOCK)])
        return self._run(f"prefill_{fits[0]}", padded, ids.size,
                         image_embeds=features.reshape(-1, self.hidden), blocks=blocks)

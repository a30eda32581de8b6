"""onnxruntime runner for gemma-edge vision exports (exporter/vision_onnx.py): three sessions.

Behind the text runner protocol (runner.py) plus `set_images`, as the reference runner
(vision_torch_runner.py): a prefill whose tokens hold image placeholders runs the vision
encoder on the pending images, writes the features over the placeholders' embeddings and
gives the decoder the chunk's `block_ids` (PaliGemma: the whole chunk is the prefix;
Gemma 3: each run of image tokens). Positions start at the manifest's `position_offset`.
The cache grows: each step's present.* are the next step's past_key_values.*.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.artifacts import read_manifest
from foundation.errors import GemmaEdgeError
from runtime_check.runner import StepRunner


class VisionOnnxRunner(StepRunner):
    name = "onnxruntime"

    def __init__(self, artifact: str | Path, *, threads: int | None = None) -> None:
        from runtime_check.onnx_runner import ort_session

        artifact = Path(artifact)
        manifest = read_manifest(artifact)
        if "vision" not in manifest or "graphs" not in manifest:
            raise GemmaEdgeError(f"{artifact} is not a vision export (no vision graphs in its "
                                 "manifest)", "export a vision-language source with --format onnx")
        self.sessions = {}
        for name, graph in manifest["graphs"].items():
            _ort, self.sessions[name] = ort_session(artifact / graph["file"], threads)
        self.facts = manifest["vision"]
        facts = manifest["graph"]
        self._past_names = [i.name for i in self.sessions["decoder"].get_inputs()
                            if i.name.startswith("past_key_values.")]
        self._cache_dims = (int(facts["num_kv_heads"]), int(facts["head_dim"]))
        self.image_id = int(self.facts["image_token_id"])
        self._pixels = None
        self.reset()

    def set_images(self, pixel_values: np.ndarray | None) -> None:
        self._pixels = None if pixel_values is None else np.asarray(pixel_values, np.float32)

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.sessions["vision_encoder"].run(
            ["image_features"], {"pixel_values": np.asarray(pixel_values, np.float32)})[0]

    def reset(self) -> None:
        kv_heads, head_dim = self._cache_dims
        empty = np.zeros((1, kv_heads, 0, head_dim), np.float32)
        self._past = [empty] * len(self._past_names)
        self._pos = 0

    def _block_ids(self, ids: np.ndarray, has_image: bool) -> np.ndarray:
        from foundation.vision_prompt import NO_BLOCK

        if not has_image:
            return np.full_like(ids, NO_BLOCK)
        if self.facts["attention"] == "prefix":
            return np.zeros_like(ids)
        is_image = ids == self.image_id
        starts = is_image & ~np.concatenate([[False], is_image[:-1]])
        return np.where(is_image, np.cumsum(starts) - 1, NO_BLOCK)

    def _step(self, token_ids: Sequence[int]) -> np.ndarray:
        n = len(token_ids)
        if n == 0:
            raise ValueError("prefill needs at least one token")
        ids = np.asarray(token_ids, dtype=np.int64)
        embeds = self.sessions["embed_tokens"].run(["inputs_embeds"], {"input_ids": ids[None]})[0]
        has_image = bool((ids == self.image_id).any())
        if has_image:
            if self._pixels is None:
                raise ValueError("image tokens without images: call set_images first")
            features = self.image_features(self._pixels)
            mask = ids == self.image_id
            if int(mask.sum()) != features.shape[0] * features.shape[1]:
                raise GemmaEdgeError(f"the prompt has {int(mask.sum())} image tokens for "
                                     f"{features.shape[0]} image(s) of {features.shape[1]} "
                                     "features", "put one image placeholder per image")
            embeds[0, mask] = features.reshape(-1, embeds.shape[-1])
            self._pixels = None
        feeds = {"inputs_embeds": embeds,
                 "attention_mask": np.ones((1, self._pos + n), np.int64),
                 "position_ids": (np.arange(self._pos, self._pos + n, dtype=np.int64)
                                  + int(self.facts["position_offset"]))[None],
                 "block_ids": self._block_ids(ids, has_image)[None],
                 **dict(zip(self._past_names, self._past, strict=True))}
        logits, *present = self.sessions["decoder"].run(None, feeds)
        self._past = present
        self._pos += n
        return logits[0]

    def close(self) -> None:
        self.sessions = {}
        self._past = []

"""torch -> LiteRT for vision-language Gemma: one .tflite, weights shared across signatures.

  vision_encoder  pixel_values [1,3,H,W] -> image_features [1,T_img,hidden]
  decode          tokens [1,1], image_embeds [1,1,hidden], image_mask [1,1,1], input_pos [1],
  prefill_<T>     mask [1,1,T,C], local_mask [1,1,T,C], kv caches -> logits, kv caches

The text layout is the text families' (litert_decoder.StaticCacheDecoder: fixed cache,
updated in place); the embedding step merges the image in-graph: rows where image_mask is 1
take image_embeds instead of the token's embedding (litert-torch cannot lower
masked_scatter; its PaliGemma example puts the image first instead). Both masks come from
the runtime, so the image's full attention (PaliGemma's prefix, Gemma 3's image blocks)
and the sliding window's composition with it are exact (runtime_check/vision_litert_runner.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir, fp32_weight_bytes, write_manifest
from foundation.errors import GemmaEdgeError, require_extra
from foundation.formats import FORMATS
from foundation.sources import ReferenceModel
from foundation.vision_prompt import generator

log = logging.getLogger("gemma_edge")

MODEL_FILE = FORMATS["tflite"].model_file


def _modules(ref: ReferenceModel, cache_length: int):
    import torch
    from torch import nn

    from exporter.litert_decoder import StaticCacheDecoder
    from exporter.vision_graphs import vision_graphs

    encoder, embed, decoder = vision_graphs(ref.model, ref.family)

    class MergedDecoder(StaticCacheDecoder):
        def sample_inputs(self, seq: int) -> dict[str, torch.Tensor]:
            hidden = self.decoder.hf.config.hidden_size
            base = super().sample_inputs(seq)
            base.update(image_embeds=torch.zeros((1, seq, hidden)),
                        image_mask=torch.zeros((1, seq, 1)),
                        local_mask=torch.zeros((1, 1, seq, self.cache_len)))
            return base

        def forward(self, tokens, image_embeds, image_mask, input_pos, mask, local_mask, **caches):
            from litert_torch.generative.custom_ops.dynamic_update_slice import (
                dynamic_update_slice,
            )

            d = self.decoder
            h = embed(tokens) * (1.0 - image_mask) + image_embeds * image_mask
            masks = {"full_attention": mask, "sliding_attention": local_mask}
            zero = torch.zeros((1,), dtype=torch.int32)[0]
            pos = input_pos[:1][0]

            def in_place(i):
                def update(k, v):
                    return (dynamic_update_slice(caches[self.names[2 * i]], k,
                                                 [zero, zero, pos, zero]),
                            dynamic_update_slice(caches[self.names[2 * i + 1]], v.transpose(2, 3),
                                                 [zero, zero, zero, pos]))
                return update

            logits, present = d.run_layers(h, input_pos[None, :], masks, in_place)
            return {"logits": logits, **dict(zip(self.names, present, strict=True))}

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, pixel_values):
            return {"image_features": self.encoder(pixel_values)}

    return Encoder().eval(), MergedDecoder(decoder, cache_length).eval()


def export_vision_tflite(ref: ReferenceModel, out_dir: str | Path, *, overwrite: bool = False,
                         record: dict[str, Any] | None = None,
                         prefill_lengths: tuple[int, ...] | None = None,
                         cache_length: int | None = None, head_block: int | None = None,
                         rotate: bool | None = None) -> dict[str, Any]:
    """Write OUT_DIR/{model.tflite (vision_encoder, prefill_<T>, decode), tokenizer, manifest}.
    Float, unrotated: the text export's --rotate and --head-block are not offered here."""
    if rotate or head_block:
        raise GemmaEdgeError("--rotate and --head-block are not offered for vision models yet",
                             "export without them (docs/vision.md)")
    import torch

    from exporter.cache_decoder import decoder_facts
    from exporter.tflite_export import _converter_chatter
    from exporter.vision_onnx import vision_facts

    if not ref.family.vision:
        raise GemmaEdgeError(f"the {ref.family.title} family has no vision tower")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GemmaEdgeError(f"{out_dir} already exists", "pass --overwrite or choose another --out")
    facts = vision_facts(ref)
    text = generator(ref.model, ref.family).config.get_text_config()
    cache_length = int(cache_length or min(1024, text.max_position_embeddings))
    lengths = tuple(sorted({int(t) for t in (prefill_lengths or (facts["image_seq_length"] + 64,))}))
    if lengths[0] < 1 or lengths[-1] > cache_length:
        raise GemmaEdgeError(f"prefill lengths {lengths} must be within 1..{cache_length}",
                             "pass --prefill-lengths that hold an image and its prompt")
    require_extra("tflite", {"litert_torch": "litert-torch", "ai_edge_litert": "ai-edge-litert"})
    import litert_torch

    started = time.time()
    encoder, module = _modules(ref, cache_length)
    size = generator(ref.model, ref.family).config.vision_config.image_size
    with atomic_output_dir(out_dir, overwrite=overwrite,
                           needs_bytes=fp32_weight_bytes(ref.model)) as tmp:
        log.info("converting %s to LiteRT: vision_encoder + decode + prefill %s, KV cache %d",
                 ref.spec, "/".join(map(str, lengths)), cache_length)
        with torch.no_grad(), _converter_chatter(log.isEnabledFor(logging.DEBUG)):
            converter = litert_torch.signature(
                "vision_encoder", encoder, sample_kwargs={"pixel_values": torch.zeros(1, 3, size, size)})
            converter = converter.signature("decode", module, sample_kwargs=module.sample_inputs(1))
            for length in lengths:
                converter = converter.signature(f"prefill_{length}", module,
                                                sample_kwargs=module.sample_inputs(length))
            # lazy constants, no runtime folding: as the text export (tflite_export.py)
            edge_model = converter.convert(lightweight_conversion=True,
                                           runtime_constant_folding=False)
            edge_model.export(str(tmp / MODEL_FILE))
        ref.tokenizer.save_pretrained(tmp)
        manifest = write_manifest(
            tmp, stage="export", started=started, packages=FORMATS["tflite"].export_tools,
            inputs={"source": ref.spec, "source_sha256": ref.sha256, "family": ref.family.name,
                    "variant": ref.variant},
            extra={"format": "tflite", "recipe": "fp32", "model_file": MODEL_FILE,
                   "graph": {"cache_length": cache_length, "prefill_lengths": list(lengths),
                             "signatures": ["vision_encoder", "decode",
                                            *(f"prefill_{t}" for t in lengths)],
                             **decoder_facts(module.decoder)},
                   "vision": facts, "notes": ref.notes, **(record or {})},
        )
    log.info("wrote %s (%.1f s)", out_dir, manifest["wall_seconds"])
    return manifest

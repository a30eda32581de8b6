"""torch -> ONNX for vision-language Gemma: three graphs in the layout transformers.js loads
(onnx-community's VLM repos) and onnxruntime-genai's multimodal config names.

  vision_encoder.onnx        pixel_values [num_images,3,H,W] -> image_features [num_images,T,hidden]
  embed_tokens.onnx          input_ids [1,S] -> inputs_embeds [1,S,hidden]
  decoder_model_merged.onnx  inputs_embeds, attention_mask, position_ids, block_ids,
                             past_key_values.{i}.key/value -> logits, present.{i}.key/value

The decoder is CacheDecoder's plain math (MatMul/Softmax with an explicit mask, not
GroupQueryAttention, whose masking is causal only): the image's full attention comes in as
`block_ids` (exporter/vision_graphs.py). The manifest records the image preprocessing, the
image token and features per image, the position offset and the attention kind, so a
runtime needs nothing but the artifact.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir, fp32_weight_bytes, write_manifest
from foundation.errors import GemmaEdgeError, require_extra
from foundation.formats import FORMATS
from foundation.images import processor_config
from foundation.sources import ReferenceModel
from foundation.vision_prompt import generator, image_seq_length, image_token_id

log = logging.getLogger("gemma_edge")

GRAPHS = {"vision_encoder": "vision_encoder.onnx", "embed_tokens": "embed_tokens.onnx",
          "decoder": "decoder_model_merged.onnx"}
OPSET = 23


def vision_facts(ref: ReferenceModel) -> dict[str, Any]:
    """What a runtime must know beyond the graphs, as every vision artifact records it."""
    gen = generator(ref.model, ref.family)
    vision = ref.family.vision
    facts = {"image_token_id": image_token_id(ref), "image_seq_length": image_seq_length(gen.config),
             "attention": vision["attention"],
             "window_cuts_blocks": bool(vision.get("window_cuts_blocks")),
             "position_offset": int(vision.get("position_offset", 0)),
             "preprocessing": processor_config(ref.family, gen.config, ref.checkpoint_dir)}
    if vision.get("classifier"):
        facts["classifier"] = {"yes_token_id": int(ref.model.yes_token_index),
                               "no_token_id": int(ref.model.no_token_index)}
    return facts


def export_vision_onnx(ref: ReferenceModel, out_dir: str | Path, *, overwrite: bool = False,
                       record: dict[str, Any] | None = None,
                       rotate: bool | None = None) -> dict[str, Any]:
    """Write OUT_DIR/{the three graphs + .data, tokenizer files, manifest.json}."""
    if rotate:
        raise GemmaEdgeError("--rotate is not offered for vision models yet",
                             "export without it (docs/vision.md)")
    require_extra("onnx", {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime"})
    import torch

    from exporter.cache_decoder import cache_names, decoder_facts
    from exporter.onnx_export import _exporter_chatter_silenced, _finish_graph
    from exporter.vision_graphs import vision_graphs

    if not ref.family.vision:
        raise GemmaEdgeError(f"the {ref.family.title} family has no vision tower")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GemmaEdgeError(f"{out_dir} already exists", "pass --overwrite or choose another --out")
    started = time.time()
    encoder, embed, decoder = vision_graphs(ref.model, ref.family)
    gen = generator(ref.model, ref.family)
    size = gen.config.vision_config.image_size
    hidden = gen.config.get_text_config().hidden_size
    past_names, present_names = cache_names(decoder.num_layers)
    seq, past = 3, 4  # example sizes > 1 so torch.export does not specialise them
    s_dim = torch.export.Dim("sequence_length", min=1, max=1 << 16)
    p_dim = torch.export.Dim("past_sequence_length", min=0, max=1 << 16)
    jobs = [
        ("vision_encoder", encoder, (torch.randn(2, 3, size, size),), ["pixel_values"],
         ["image_features"], [{0: torch.export.Dim("num_images", min=1, max=64)}]),
        ("embed_tokens", embed, (torch.ones(1, seq, dtype=torch.long),), ["input_ids"],
         ["inputs_embeds"], [{1: s_dim}]),
        ("decoder", decoder,
         (torch.randn(1, seq, hidden), torch.ones(1, past + seq, dtype=torch.long),
          torch.arange(past, past + seq)[None], torch.tensor([[0, 0, -1]]),
          *(t.normal_() for t in decoder.empty_cache(past))),
         ["inputs_embeds", "attention_mask", "position_ids", "block_ids", *past_names],
         ["logits", *present_names],
         [{1: s_dim}, {1: torch.export.Dim.AUTO}, {1: s_dim}, {1: s_dim},
          tuple({2: p_dim} for _ in past_names)]),
    ]
    with atomic_output_dir(out_dir, overwrite=overwrite,
                           needs_bytes=fp32_weight_bytes(ref.model)) as tmp:
        graphs = {}
        for name, module, example, inputs, outputs, dynamic in jobs:
            log.info("exporting %s's %s to ONNX", ref.spec, name)
            with torch.inference_mode(False), torch.no_grad(), _exporter_chatter_silenced():
                torch.onnx.export(module, example, str(tmp / GRAPHS[name]), dynamo=True,
                                  external_data=True, input_names=inputs, output_names=outputs,
                                  dynamic_shapes=dynamic, opset_version=OPSET, optimize=True,
                                  verbose=False)
            graphs[name] = {"file": GRAPHS[name], **_finish_graph(tmp / GRAPHS[name])}
        ref.tokenizer.save_pretrained(tmp)
        manifest = write_manifest(
            tmp, stage="export", started=started, packages=FORMATS["onnx"].export_tools,
            inputs={"source": ref.spec, "source_sha256": ref.sha256, "family": ref.family.name,
                    "variant": ref.variant},
            extra={"format": "onnx", "recipe": "fp32", "model_file": GRAPHS["decoder"],
                   "graph": {**graphs["decoder"], **decoder_facts(decoder)}, "graphs": graphs,
                   "vision": vision_facts(ref), "notes": ref.notes, **(record or {})},
        )
    log.info("wrote %s (%.1f s)", out_dir, manifest["wall_seconds"])
    return manifest

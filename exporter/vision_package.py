"""Packages of vision-language exports (docs/vision.md).

The family names these as its `onnx-bundle.builder` and `litertlm.builder`:

- ONNX bundle: the three graphs (+ their .data), `processor_config.json` (the image
  preprocessing as onnxruntime-extensions' transforms, which onnxruntime-genai's
  multimodal processor reads), `genai_config.json` in onnxruntime-genai's VLM layout
  (`vision`, `embedding`, `decoder` sections, as its Gemma 3 / Phi-3 vision bundles name
  them) and `vision.json` (what our runner needs: image token, features per image,
  attention kind, position offset, preprocessing). onnxruntime-genai 0.18 does not run it
  (its decoder feeds no `block_ids`, its embedding graph merges the image itself):
  docs/vision.md records its error; `gemma-edge run PACKAGE --image` runs the bundle in
  onnxruntime through runtime_check/vision_onnx_runner.py, exactly as `check` ran it.
- LiteRT-LM: refused in one line. litert-lm-builder has vision section types
  (VISION_ENCODER, VISION_ADAPTER), but LiteRT-LM's engine feeds its own signatures
  (embeddings in, causal masks it builds), not our one .tflite whose prefill takes the
  image rows and both attention masks; a .litertlm of it would not run. Ship the checked
  LiteRT export directory (model.tflite + manifest + tokenizer) instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from foundation.errors import GemmaEdgeError

VISION_FACTS = "vision.json"
PROCESSOR_CONFIG = "processor_config.json"
_INTERPOLATION = {"bicubic": "CUBIC", "bilinear": "LINEAR", "nearest": "NEAREST"}


def processor_transforms(settings: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing (foundation/images.py settings) as onnxruntime-extensions' processor."""
    size = settings["size"]
    ops = [("decode_image", "DecodeImage", {"color_space": "RGB"}),
           ("convert_to_rgb", "ConvertRGB", None),
           ("resize", "Resize", {"width": int(size["width"]), "height": int(size["height"]),
                                 "interpolation": _INTERPOLATION[settings.get("resample", "bicubic")],
                                 "keep_aspect_ratio": 0}),
           ("rescale", "Rescale", {"rescale_factor": float(settings["rescale_factor"])}),
           ("normalize", "Normalize", {"mean": list(settings["image_mean"]),
                                       "std": list(settings["image_std"])}),
           ("to_channel_first", "Permute3D", {"dims": [2, 0, 1]})]
    transforms = [{"operation": {"name": n, "type": t, **({"attrs": a} if a else {})}}
                  for n, t, a in ops]
    return {"processor": {"name": "gemma_3_image_processing", "transforms": transforms}}


def vision_genai_config(manifest: dict, tokens: dict) -> dict[str, Any]:
    """The text bundle's genai_config with the decoder fed embeddings, plus the vision and
    embedding sections onnxruntime-genai's multimodal models read."""
    from exporter.package import genai_config

    config = genai_config(manifest, tokens)
    graphs = {name: g["file"] for name, g in manifest["graphs"].items()}
    facts = manifest["vision"]
    model = config["model"]
    model["type"] = "gemma3"  # onnxruntime-genai's name for its Gemma 3 vision pipeline
    model["image_token_id"] = int(facts["image_token_id"])
    decoder = model["decoder"]
    decoder["filename"] = graphs["decoder"]
    inputs = decoder["inputs"]
    inputs.pop("input_ids")
    decoder["inputs"] = {"inputs_embeds": "inputs_embeds", **inputs}
    model["vision"] = {"filename": graphs["vision_encoder"], "config_filename": PROCESSOR_CONFIG,
                       "num_visual_tokens": int(facts["image_seq_length"]),
                       "inputs": {"pixel_values": "pixel_values"},
                       "outputs": {"image_features": "image_features"}}
    model["embedding"] = {"filename": graphs["embed_tokens"],
                          "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
                          "outputs": {"inputs_embeds": "inputs_embeds"}}
    config["search"]["past_present_share_buffer"] = False  # our decoder's cache grows by concat
    return config


def build_vision_bundle(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    files = []
    for graph in manifest["graphs"].values():
        for name in (graph["file"], f"{graph['file']}.data"):
            if (artifact / name).is_file():
                shutil.copy2(artifact / name, tmp / name)
                files.append(name)
    facts = manifest["vision"]
    (tmp / PROCESSOR_CONFIG).write_text(json.dumps(processor_transforms(facts["preprocessing"]),
                                                   indent=2) + "\n")
    (tmp / "genai_config.json").write_text(json.dumps(vision_genai_config(manifest, tokens),
                                                      indent=2) + "\n")
    (tmp / VISION_FACTS).write_text(json.dumps(facts, indent=2) + "\n")
    return [*files, PROCESSOR_CONFIG, "genai_config.json", VISION_FACTS]


def refuse_vision_litertlm(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    raise GemmaEdgeError(f"{artifact} is a vision-language LiteRT export; LiteRT-LM's engine "
                         "does not run its signatures (image rows and both attention masks come "
                         "from the runtime)", "ship the checked export directory (model.tflite, "
                         "manifest, tokenizer) and run it with gemma-edge's runner (docs/vision.md)")


def refuse_vision_web(artifact: Path, tmp: Path, manifest: dict, tokens: dict) -> list[str]:
    raise GemmaEdgeError(f"{artifact} is a vision-language export; the web page runs text models "
                         "only", "package it as an onnx-bundle (docs/vision.md)")

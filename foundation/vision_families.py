"""The vision-language Gemma families as data: PaliGemma (1 and 2), Gemma 3 multimodal, ShieldGemma 2.

Plain keyword dicts that foundation.families turns into `Family` entries (this module
imports nothing, so the registry has no import cycle). `vision` holds what parity depends
on and what differs between the three (docs/vision.md):

  generator        attribute path from the loaded model to its *ForConditionalGeneration
  attention        "prefix": image + prompt attend to each other fully, causal after
                   (PaliGemma); "image_blocks": each run of image tokens attends to
                   itself fully, everything else is causal (Gemma 3)
  window_cuts_blocks  whether a sliding-window layer's window also cuts the full-attention
                   block (Gemma 3) or the block is seen whole (PaliGemma), as transformers
                   composes the masks
  position_offset  PaliGemma's positions start at 1, Gemma 3's at 0
  image_token      the placeholder each image feature replaces; boi/eoi wrap a Gemma 3 image
  processor        the image processor's defaults (a checkpoint's preprocessor_config.json wins)
  classifier       ShieldGemma 2: the model attributes naming the Yes/No tokens whose softmax
                   at the last position is the violation probability
"""

from __future__ import annotations

# The tiny text shape every family's tiny config starts from (foundation.families uses it too)
TINY_TEXT = {
    "hidden_size": 128,  # every Linear's K divisible by 128, the largest quantization block
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 512,
    "initializer_range": 0.1,
}
# Tiny SigLIP towers: a 16 or 32 pixel image of 4-pixel patches (16 or 64 patches).
_TINY_SIGLIP = {
    "model_type": "siglip_vision_model",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 4,
    "vision_use_head": False,
}
_SIGLIP_PROCESSOR = {"resample": "bicubic", "rescale_factor": 1 / 255,
                     "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
_GEMMA3_PROCESSOR = {"resample": "bilinear", "rescale_factor": 1 / 255,
                     "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
_GEMMA3_VISION = {
    "generator": "",
    "attention": "image_blocks",
    "window_cuts_blocks": True,  # sliding layers: AND(window, OR(causal, block))
    "position_offset": 0,
    "image_token": "<image_soft_token>",
    "boi": "<start_of_image>",
    "eoi": "<end_of_image>",
    "processor": _GEMMA3_PROCESSOR,
}
_GEMMA3_TINY = {
    "text_config": {
        **TINY_TEXT,
        "model_type": "gemma3_text",
        "num_hidden_layers": 4,
        "num_key_value_heads": 1,
        "sliding_window": 6,
        "query_pre_attn_scalar": 32,
        "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
    },
    # 32 px / 4 px patches = 8 x 8 patches, pooled 4 x 4 (as the real 64 x 64 -> 16 x 16) to 4 tokens
    "vision_config": {**_TINY_SIGLIP, "image_size": 32},
    "mm_tokens_per_image": 4,
}
_VISION_IMPLEMENTATIONS = {
    "onnx.exporter": "exporter.vision_onnx:export_vision_onnx",
    "onnx.runner": "runtime_check.vision_onnx_runner:VisionOnnxRunner",
    "torch.runner": "runtime_check.vision_torch_runner:TorchVisionRunner",
    "tflite.exporter": "exporter.vision_litert:export_vision_tflite",
    "tflite.runner": "runtime_check.vision_litert_runner:VisionLiteRTRunner",
    # the decoder by the recipe, the tower int8, the projector float (quantization/vision_quantize.py)
    "onnx.weights": "quantization.vision_quantize:quantize_vision_weights",
    "tflite.weights": "quantization.vision_quantize:quantize_vision_weights",
    "onnx.quantizer": "quantization.vision_quantize:quantize_vision_onnx",
    "tflite.quantizer": "quantization.vision_quantize:quantize_vision_tflite",
    # the three graphs + processor_config + genai_config, run by our engine (exporter/vision_package.py)
    "onnx-bundle.builder": "exporter.vision_package:build_vision_bundle",
    "onnx-bundle.engine": "runtime_check.vision_engine:VisionBundleEngine",
    "litertlm.builder": "exporter.vision_package:refuse_vision_litertlm",
    "web.builder": "exporter.vision_package:refuse_vision_web",
}
_VISION_QUIRKS = ("siglip_vision_tower", "image_features_replace_placeholders",
                  "embedding_scaled_by_sqrt_hidden", "rmsnorm_one_plus_weight")

VISION_FAMILIES: tuple[dict, ...] = (
    {
        "name": "paligemma",
        "title": "PaliGemma",
        "covers": ("PaliGemma (Gemma 1 decoder)", "PaliGemma 2 (Gemma 2 decoder)"),
        "model_types": ("paligemma",),
        "gguf_architectures": (),
        "causal_lm_class": "PaliGemmaForConditionalGeneration",
        "config_class": "PaliGemmaConfig",
        "exports": ("onnx", "tflite"),
        "quirks": (*_VISION_QUIRKS, "prefix_attention", "positions_from_one", "linear_projector",
                   "sliding_window", "attn_logit_softcapping", "final_logit_softcapping",
                   "sandwich_norm"),
        "tiny_config": {
            "text_config": {
                **TINY_TEXT,
                "model_type": "gemma2",
                "num_hidden_layers": 4,
                "sliding_window": 6,
                "query_pre_attn_scalar": 32,
                "attn_logit_softcapping": 50.0,
                "final_logit_softcapping": 30.0,
            },
            # 16 px / 4 px patches = 16 image tokens, no pooling
            "vision_config": {**_TINY_SIGLIP, "image_size": 16},
            "projection_dim": 128,
            "hidden_size": 128,
        },
        "implementations": _VISION_IMPLEMENTATIONS,
        "vision": {
            "generator": "",
            "attention": "prefix",
            "window_cuts_blocks": False,  # sliding layers: OR(causal AND window, block)
            "position_offset": 1,
            "image_token": "<image>",
            "processor": _SIGLIP_PROCESSOR,
        },
    },
    {
        "name": "gemma3",
        "title": "Gemma 3 multimodal",
        "covers": ("Gemma 3 4B/12B/27B with the SigLIP tower",),
        "model_types": ("gemma3",),
        "gguf_architectures": (),
        "causal_lm_class": "Gemma3ForConditionalGeneration",
        "config_class": "Gemma3Config",
        "exports": ("onnx", "tflite"),
        "quirks": (*_VISION_QUIRKS, "bidirectional_image_attention", "avg_pool_4x4",
                   "soft_embedding_norm", "sliding_window", "sandwich_norm", "qk_norm",
                   "per_layer_rope_theta"),
        "tiny_config": _GEMMA3_TINY,
        "implementations": _VISION_IMPLEMENTATIONS,
        "vision": _GEMMA3_VISION,
    },
    {
        "name": "shieldgemma2",
        "title": "ShieldGemma 2",
        "covers": ("ShieldGemma 2 4B (an image-safety classifier on Gemma 3 4B)",),
        "model_types": ("shieldgemma2",),
        "gguf_architectures": (),
        "causal_lm_class": "ShieldGemma2ForImageClassification",
        "config_class": "ShieldGemma2Config",
        "exports": ("onnx", "tflite"),
        "quirks": (*_VISION_QUIRKS, "bidirectional_image_attention", "avg_pool_4x4",
                   "soft_embedding_norm", "sliding_window", "sandwich_norm", "qk_norm",
                   "per_layer_rope_theta", "yes_no_classifier"),
        "tiny_config": _GEMMA3_TINY,
        "implementations": _VISION_IMPLEMENTATIONS,
        # ShieldGemma2ForImageClassification wraps a Gemma3ForConditionalGeneration as .model
        "vision": {**_GEMMA3_VISION, "generator": "model",
                   "classifier": "yes_token_index/no_token_index"},
    },
)

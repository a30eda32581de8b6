"""The Gemma architectures gemma-edge knows, as data.

A family is a frozen record: which transformers `model_type` it covers, which export
paths support it, its stop tokens and chat template, its numeric quirks, and a tiny
seeded config for tests. Adding a family is adding an entry here, not editing the
exporters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from foundation.errors import SourceError
from foundation.vision_families import TINY_TEXT, VISION_FAMILIES

# One turn format serves Gemma 1, 2 and 3 (and CodeGemma IT). A system message is
# folded into the first user turn, as Gemma 3's own template does; Gemma has no
# system role. Kept in sync with foundation.chat.format_chat (a test checks).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='', text='') %}"
    "{% for message in messages %}"
    # content is a string, or (LiteRT-LM's gemma3 requests) a list of typed parts
    "{% if message['content'] is string %}{% set ns.text = message['content'] %}"
    "{% else %}{% set ns.text = '' %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{% set ns.text = ns.text + part['text'] %}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'system' %}{% set ns.system = ns.text | trim %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{% set content = ns.text | trim %}"
    "{% if ns.system and role == 'user' %}"
    "{% set content = ns.system + '\\n\\n' + content %}{% set ns.system = '' %}"
    "{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + content + '<end_of_turn>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# Tiny configs: small enough for sub-second tests, shaped like the real thing
# (GQA, several layers, a sliding window of a few tokens so tests cross it).
_TINY_COMMON = {**TINY_TEXT, "tie_word_embeddings": True}


@dataclass(frozen=True)
class Family:
    """One architecture. Names follow the transformers config they map to."""

    name: str
    title: str
    covers: tuple[str, ...]
    model_types: tuple[str, ...]
    gguf_architectures: tuple[str, ...]
    causal_lm_class: str
    config_class: str
    exports: tuple[str, ...]
    quirks: tuple[str, ...]
    stop_tokens: tuple[str, ...] = ("<eos>", "<end_of_turn>")
    chat_template: str = GEMMA_CHAT_TEMPLATE
    tiny_config: Mapping[str, object] = field(default_factory=dict)
    # Where a family's graphs are not the decoder-only text layout (a vision tower, recurrent
    # state), it names its own implementations as "module:attr", keyed "<format>.<role>"
    # (roles: exporter, quantizer, runner) or "<package kind>.<role>" (builder, engine).
    # Stage code asks `implementation()`; anything not named here is the format's default.
    implementations: Mapping[str, str] = field(default_factory=dict)
    # Code models' fill-in-the-middle tokens (prefix, suffix, middle, file_separator); used
    # by `run --fim-prefix/--fim-suffix` when the source's tokenizer has them (CodeGemma).
    fim: Mapping[str, str] = field(default_factory=dict)
    # Vision-language families: image tokens, attention over the image, preprocessing and
    # where the language model sits (docs/vision.md); empty for text-only families.
    vision: Mapping[str, object] = field(default_factory=dict)

    def has(self, quirk: str) -> bool:
        return quirk in self.quirks

    def implementation(self, key: str, default: str) -> str:
        return self.implementations.get(key, default)


FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        f.name: f
        for f in (
            Family(
                name="gemma",
                title="Gemma 1",
                covers=("Gemma 1", "Gemma 1.1", "CodeGemma"),
                model_types=("gemma",),
                gguf_architectures=("gemma",),
                causal_lm_class="GemmaForCausalLM",
                config_class="GemmaConfig",
                exports=("tflite", "onnx"),
                quirks=("embedding_scaled_by_sqrt_hidden", "rmsnorm_one_plus_weight"),
                # CodeGemma ends an infill or a file with <|file_separator|>: a stop token
                # wherever the tokenizer has it (packages of code models too)
                stop_tokens=("<eos>", "<end_of_turn>", "<|file_separator|>"),
                fim={"prefix": "<|fim_prefix|>", "suffix": "<|fim_suffix|>",
                     "middle": "<|fim_middle|>", "file_separator": "<|file_separator|>"},
                tiny_config={**_TINY_COMMON, "num_hidden_layers": 2},
            ),
            Family(
                name="gemma2",
                title="Gemma 2",
                covers=("Gemma 2", "ShieldGemma (text)"),
                model_types=("gemma2",),
                gguf_architectures=("gemma2",),
                causal_lm_class="Gemma2ForCausalLM",
                config_class="Gemma2Config",
                exports=("tflite", "onnx"),
                quirks=(
                    "embedding_scaled_by_sqrt_hidden",
                    "rmsnorm_one_plus_weight",
                    "attn_logit_softcapping",
                    "final_logit_softcapping",
                    "sliding_window",
                    "sandwich_norm",
                ),
                tiny_config={
                    **_TINY_COMMON,
                    "num_hidden_layers": 4,
                    "sliding_window": 6,
                    "query_pre_attn_scalar": 32,
                    "attn_logit_softcapping": 50.0,
                    "final_logit_softcapping": 30.0,
                },
            ),
            Family(
                name="gemma3_text",
                title="Gemma 3 (text)",
                covers=("Gemma 3 270M/1B", "text tower of Gemma 3 4B-27B"),
                model_types=("gemma3_text",),
                gguf_architectures=("gemma3",),
                causal_lm_class="Gemma3ForCausalLM",
                config_class="Gemma3TextConfig",
                exports=("tflite", "onnx"),
                quirks=(
                    "embedding_scaled_by_sqrt_hidden",
                    "rmsnorm_one_plus_weight",
                    "sliding_window",
                    "sandwich_norm",
                    "qk_norm",
                    "per_layer_rope_theta",
                ),
                tiny_config={
                    **_TINY_COMMON,
                    "num_hidden_layers": 4,
                    "num_key_value_heads": 1,
                    "sliding_window": 6,
                    "query_pre_attn_scalar": 32,
                    "layer_types": [
                        "sliding_attention",
                        "sliding_attention",
                        "sliding_attention",
                        "full_attention",
                    ],
                },
            ),
            Family(  # Griffin: its state is graph I/O, not a growing KV cache (docs/recurrent.md)
                name="recurrent_gemma",
                title="RecurrentGemma",
                covers=("RecurrentGemma 2B/9B",),
                model_types=("recurrent_gemma",),
                gguf_architectures=(),
                causal_lm_class="RecurrentGemmaForCausalLM",
                config_class="RecurrentGemmaConfig",
                exports=("onnx", "tflite"),
                quirks=(
                    "embedding_scaled_by_sqrt_hidden",
                    "normalizer_rounded_to_bf16",
                    "rmsnorm_one_plus_weight",
                    "logits_soft_cap",
                    "sliding_window",
                    "partial_rotary",
                    "rg_lru_recurrence",
                    "conv1d_temporal",
                ),
                tiny_config={
                    "hidden_size": 128,
                    "lru_width": 128,
                    "intermediate_size": 512,  # the MLP is intermediate_size // 2 wide
                    "num_attention_heads": 4,
                    "num_key_value_heads": 1,
                    "num_hidden_layers": 3,
                    "block_types": ["recurrent", "recurrent", "attention"],
                    "attention_window_size": 8,
                    "conv1d_width": 4,
                    "logits_soft_cap": 30.0,
                    "tie_word_embeddings": True,
                },
                implementations={
                    "onnx.exporter": "exporter.recurrent_onnx:export_recurrent_onnx",
                    "onnx.runner": "runtime_check.recurrent_runner:RecurrentOnnxRunner",
                    "torch.runner": "runtime_check.recurrent_runner:RecurrentTorchRunner",
                    "tflite.exporter": "exporter.recurrent_tflite:export_recurrent_tflite",
                    "tflite.runner": "runtime_check.recurrent_litert:RecurrentLiteRTRunner",
                    # no engine we target runs Griffin: graphs + tokenizer + state_io.json
                    "onnx-bundle.builder": "exporter.recurrent_package:build_recurrent_bundle",
                    "onnx-bundle.engine": "runtime_check.recurrent_engine:RecurrentEngine",
                    "litertlm.builder": "exporter.recurrent_package:refuse_engine_package",
                    "web.builder": "exporter.recurrent_package:refuse_engine_package",
                },
            ),
            *(Family(**entry) for entry in VISION_FAMILIES),
        )
    }
)

# Recognised, named in errors, not yet supported by any path.
UNSUPPORTED: Mapping[str, str] = MappingProxyType(
    {
        "gemma3n": "Gemma 3n",
    }
)


def _supported() -> str:
    return ", ".join(FAMILIES)


def implementation(family: str | None, key: str, default: str) -> str:
    """The "module:attr" that does `key` ("onnx.exporter", "litertlm.builder", ...) for the
    family an artifact records; the format's default when the family names none."""
    return FAMILIES[family].implementation(key, default) if family in FAMILIES else default


def get_family(name: str) -> Family:
    """The family registered under `name` (a family name, not a model_type)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise SourceError(
            f"unknown Gemma family '{name}'", f"use one of: {_supported()}"
        ) from None


def family_for_model_type(model_type: str) -> Family:
    """The family that covers a transformers `model_type`, or a clear error."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    if model_type in UNSUPPORTED:
        raise SourceError(
            f"{UNSUPPORTED[model_type]} (model_type '{model_type}') is not supported yet",
            f"supported families: {_supported()}",
        )
    raise SourceError(
        f"architecture '{model_type}' is not a Gemma model gemma-edge knows",
        f"supported families: {_supported()}",
    )


def family_for_gguf_architecture(arch: str) -> Family:
    for family in FAMILIES.values():
        if arch in family.gguf_architectures:
            return family
    raise SourceError(
        f"GGUF architecture '{arch}' is not a Gemma model gemma-edge can load",
        "supported GGUF architectures: "
        + ", ".join(a for f in FAMILIES.values() for a in f.gguf_architectures),
    )

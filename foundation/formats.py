"""Formats and package kinds as data: one entry holds every fact about a format.

Stage code looks a format up here instead of spelling file names or dispatching on
`fmt == "onnx"`; adding a format is adding an entry (and the modules it names). Entries
name their implementations as "module:attribute" strings, resolved only when used, so
this module imports nothing from the stages above it and nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from foundation.errors import GemmaEdgeError

CHECK_DIR = "check"  # an artifact's last `check`: CHECK_DIR/report.json (+ report.html)
CHECK_REPORT = "report.json"
ENGINE_REPORT = "engine.json"  # a package's run in its engine: PACKAGE/CHECK_DIR/ENGINE_REPORT


@dataclass(frozen=True)
class Format:
    name: str
    model_file: str  # the graph file in an export or quantized artifact directory
    exporter: str  # "module:function(ref, out, *, overwrite, **options) -> manifest"
    quantizer: str  # "module:function(export_dir, tmp, weights, recipe, ...) -> stats"
    runner: str  # "module:Class(artifact_dir, *, threads)" behind runtime_check.runner
    package: str  # the package kind an app ships this format as
    export_options: tuple[str, ...] = ()  # CLI/spec options only this format's exporter takes
    tools: tuple[str, ...] = ()  # distributions whose versions its manifests record
    export_tools: tuple[str, ...] = ()  # the converter's, recorded by its export
    default: bool = True  # built when a spec or `export` names no formats


@dataclass(frozen=True)
class PackageKind:
    name: str
    format: str  # the artifact format it is made from
    model_file: str  # the file its engine loads
    builder: str  # "module:function(artifact, tmp, manifest, tokens) -> [files]"
    engine: str  # "module:Class" that runs it on device (or its desktop twin)
    tools: tuple[str, ...] = ()


FORMATS: MappingProxyType[str, Format] = MappingProxyType({
    # ONNX first: its export is the lighter one, so each manifest's peak RSS is its own.
    "onnx": Format(
        name="onnx", model_file="model.onnx",
        exporter="exporter.onnx_export:export_onnx",
        quantizer="quantization.onnx_backend:quantize_onnx",
        runner="runtime_check.onnx_runner:OnnxRunner",
        package="onnx-bundle", tools=("onnx", "onnxruntime"),
        export_options=("rotate",),
        export_tools=("onnx", "onnxscript", "onnxruntime")),
    "tflite": Format(
        name="tflite", model_file="model.tflite",
        exporter="exporter.tflite_export:export_tflite",
        quantizer="quantization.litert_backend:quantize_tflite",
        runner="runtime_check.litert_runner:LiteRTRunner",
        package="litertlm",
        export_options=("prefill_lengths", "cache_length", "head_block", "rotate"),
        tools=("ai-edge-quantizer", "ai-edge-litert"),
        export_tools=("litert-torch", "ai-edge-litert", "tensorflow-cpu")),
    # llama.cpp / Ollama: F32 export, Q8_0 / Q4_0 blocks written by us (docs/gguf.md)
    "gguf": Format(
        name="gguf", model_file="model.gguf",
        exporter="exporter.gguf_export:export_gguf",
        quantizer="quantization.gguf_backend:quantize_gguf",
        runner="runtime_check.llama_runner:LlamaRunner",
        package="ollama", tools=("gguf", "llama-cpp-python"), export_tools=("gguf",),
        default=False),  # its fp32 check misses the 1e-3 gate in llama.cpp (docs/gguf.md)
})

PACKAGE_KINDS: MappingProxyType[str, PackageKind] = MappingProxyType({
    "litertlm": PackageKind(
        name="litertlm", format="tflite", model_file="model.litertlm",
        builder="exporter.package:build_litertlm",
        engine="runtime_check.engines:LiteRTLMEngine",
        tools=("litert-lm-builder", "litert-lm-api")),
    "onnx-bundle": PackageKind(
        name="onnx-bundle", format="onnx", model_file="model.onnx",
        builder="exporter.package:build_onnx_bundle",
        engine="runtime_check.engines:GenaiEngine",
        tools=("onnxruntime", "onnxruntime-genai")),
    "ollama": PackageKind(
        name="ollama", format="gguf", model_file="model.gguf",
        builder="exporter.ollama_package:build_ollama",
        engine="runtime_check.llama_runner:LlamaEngine", tools=("gguf", "llama-cpp-python")),
    # transformers.js + onnxruntime-web (WASM) in a page (docs/web.md)
    "web": PackageKind(
        name="web", format="onnx", model_file="index.html",
        builder="exporter.web_package:build_web",
        engine="runtime_check.web_engine:WebEngine",
        tools=("onnx",)),
})


def default_formats() -> list[str]:
    return [name for name, entry in FORMATS.items() if entry.default]


def get_format(name: str | None, what: str = "format") -> Format:
    if name not in FORMATS:
        raise GemmaEdgeError(f"unknown {what} '{name}'", f"use one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def get_package_kind(name: str) -> PackageKind:
    if name not in PACKAGE_KINDS:
        raise GemmaEdgeError(f"unknown package kind '{name}'",
                             f"use one of: {', '.join(PACKAGE_KINDS)}")
    return PACKAGE_KINDS[name]


def resolve(ref: str) -> Any:
    """The object a "module:attribute" entry names, imported now (and not before)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)

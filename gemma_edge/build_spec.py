"""A build spec (TOML): what `gemma-edge build` makes. gemma_edge.stage_graph turns it into a
stage graph.

Spec (TOML):
    source   = "builtin:gemma3-270m"
    adapter  = "my-lora/"                                # optional: a PEFT LoRA merged in
    out      = "build"
    formats  = ["onnx", "tflite"]
    recipes  = ["int8-calibrated", "int4-calibrated"]   # every format, where offered
    # or per format:  [recipes]  onnx = ["int8-calibrated"]  tflite = ["int8-dynamic"]
    gates    = "my-gates.json"                          # optional
    package  = true                                      # .litertlm / ONNX bundle per artifact
    [export]
    tflite_head_block = 64   # optional: LiteRT LM head in column parts (export --head-block)
    tflite_rotate = false    # optional: LiteRT weights unrotated (default: rotated unless
                             # tflite_head_block is set; export --rotate)
    onnx_rotate = true       # optional: ONNX weights rotated (export --format onnx --rotate)
    [check]
    text = "builtin:gemma_edge_field_notes+austen_pride_and_prejudice_ch1"
    max_tokens = 512
    latency = true
    engines = true           # run each package in its engine (LiteRT-LM, onnxruntime-genai):
                             # greedy against the reference, the engine's own tok/s
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.errors import GemmaEdgeError
from foundation.formats import FORMATS, default_formats

# [check] keys and their types; every one but engines is part of the check stage's key
CHECK_OPTIONS = {"text": str, "max_tokens": int, "greedy_tokens": int, "latency": bool,
                 "engines": bool}


@dataclass
class BuildSpec:
    source: str
    out: Path
    formats: list[str]
    recipes: dict[str, list[str]]  # format -> recipes
    gates: str | None = None
    package: bool = True
    check: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)

    @property
    def head_block(self) -> int:
        return int(self.export.get("tflite_head_block", 0))

    @property
    def rotate(self) -> bool:
        value = self.export.get("tflite_rotate")
        return not self.head_block if value is None else bool(value)

    @property
    def onnx_rotate(self) -> bool | None:
        """None: the ONNX exporter's default (exporter.onnx_export.ROTATE)."""
        return self.export.get("onnx_rotate")

    @classmethod
    def load(cls, path: str | Path) -> BuildSpec:
        import tomllib

        path = Path(path)
        if not path.is_file():
            raise GemmaEdgeError(f"build spec {path} does not exist", "pass a gemma-edge.toml file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise GemmaEdgeError(f"build spec {path} is not valid TOML ({exc})",
                                 "fix the spec's syntax (see gemma-edge.toml)") from None
        unknown = set(data) - {"source", "out", "formats", "recipes", "gates", "package", "check",
                               "export", "adapter"}
        if unknown:
            raise GemmaEdgeError(f"build spec {path} has unknown keys: {', '.join(sorted(unknown))}",
                                 "use source, out, formats, recipes, gates, package, [export], [check]")
        if "source" not in data:
            raise GemmaEdgeError(f"build spec {path} has no source", 'add source = "builtin:gemma3-270m"')
        base = path.parent
        for key, kind in (("source", str), ("adapter", str), ("out", str), ("gates", str),
                          ("package", bool), ("formats", list), ("export", dict), ("check", dict)):
            if key in data and not isinstance(data[key], kind):
                raise GemmaEdgeError(f"build spec {path}: {key} must be a {_TYPE_NAMES[kind]}, "
                                     f"not {data[key]!r}", "see gemma-edge.toml for an example")
        formats = [str(f) for f in data.get("formats", default_formats())]
        from foundation.adapters import with_adapter  # adapter = "DIR": a LoRA merged in

        spec = cls(source=with_adapter(data["source"], data.get("adapter")),
                   out=base / data.get("out", "build"), formats=formats,
                   recipes=_recipes_by_format(data.get("recipes", []), formats),
                   gates=str(base / data["gates"]) if data.get("gates") else None,
                   package=bool(data.get("package", True)), check=dict(data.get("check", {})),
                   export=dict(data.get("export", {})))
        spec.validate()
        if spec.out.exists() and not spec.out.is_dir():
            raise GemmaEdgeError(f"build spec {path}: out {spec.out} is a file",
                                 "name a directory (it is created if missing)")
        if spec.gates:
            from runtime_check.gates import load_gates

            load_gates(spec.gates)  # a broken gates file fails now, not after the exports
        return spec

    def validate(self) -> None:
        from quantization.recipes import RECIPES

        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise GemmaEdgeError(f"build spec: unknown format {bad or '(none)'}",
                                 f"use one or more of: {', '.join(FORMATS)}")
        unknown = [r for names in self.recipes.values() for r in names if r not in RECIPES]
        if set(self.recipes) - set(self.formats):
            raise GemmaEdgeError(f"build spec: recipes for {sorted(set(self.recipes) - set(self.formats))} "
                                 "but formats are " + ", ".join(self.formats),
                                 "name only formats the spec builds under [recipes]")
        if unknown:
            raise GemmaEdgeError(f"build spec: unknown recipe {unknown[0]}",
                                 f"use any of: {', '.join(RECIPES)}")
        extra = set(self.export) - {"tflite_head_block", "tflite_rotate", "onnx_rotate"}
        if extra:
            raise GemmaEdgeError(f"build spec: unknown [export] keys {', '.join(sorted(extra))}",
                                 "use tflite_head_block, tflite_rotate, onnx_rotate")
        if not isinstance(self.export.get("onnx_rotate", False), bool):
            raise GemmaEdgeError("build spec: [export] onnx_rotate must be true or false, "
                                 f"not {self.export['onnx_rotate']!r}", "e.g. onnx_rotate = true")
        block = self.export.get("tflite_head_block", 0)
        if not isinstance(block, int) or isinstance(block, bool) or block < 0:
            raise GemmaEdgeError("build spec: [export] tflite_head_block must be an integer >= 0, "
                                 f"not {block!r}", "e.g. tflite_head_block = 64, or leave it out")
        if not isinstance(self.export.get("tflite_rotate", False), bool):
            raise GemmaEdgeError("build spec: [export] tflite_rotate must be true or false, "
                                 f"not {self.export['tflite_rotate']!r}", "e.g. tflite_rotate = true")
        if self.rotate and self.head_block:
            raise GemmaEdgeError("build spec: [export] tflite_rotate and tflite_head_block do not "
                                 "combine", "use one of them (tflite_rotate is the more accurate)")
        extra = set(self.check) - set(CHECK_OPTIONS)
        if extra:
            raise GemmaEdgeError(f"build spec: unknown [check] keys {', '.join(sorted(extra))}",
                                 "use " + ", ".join(CHECK_OPTIONS))
        for key, kind in CHECK_OPTIONS.items():
            value = self.check.get(key)
            if value is not None and (not isinstance(value, kind) or (kind is int and (
                    isinstance(value, bool) or value < 1))):
                raise GemmaEdgeError(f"build spec: [check] {key} must be a "
                                     f"{'positive integer' if kind is int else _TYPE_NAMES[kind]}, "
                                     f"not {value!r}", "see gemma-edge.toml for an example")

    @property
    def engines(self) -> bool:
        """Run each package in its engine (LiteRT-LM, onnxruntime-genai) after packaging."""
        return self.check.get("engines", True)

    def check_options(self) -> dict[str, Any]:
        """Every [check] option with its default: all of them decide a check's report."""
        from foundation.texts import DEFAULT_EVAL_TEXT

        return {"text": self.check.get("text") or DEFAULT_EVAL_TEXT,
                "max_tokens": self.check.get("max_tokens", 512),
                "greedy_tokens": self.check.get("greedy_tokens", 32),
                "latency": self.check.get("latency", True), "gates": self.gates}


_TYPE_NAMES = {str: "string", bool: "boolean (true or false)", list: "list", dict: "table",
               int: "integer"}


def _recipes_by_format(value: Any, formats: list[str]) -> dict[str, list[str]]:
    """`recipes` is a list (every format, where offered) or a table of lists per format."""
    if isinstance(value, dict):
        if not all(isinstance(v, list) for v in value.values()):
            raise GemmaEdgeError("build spec: [recipes] values must be lists of recipe names",
                                 'e.g. onnx = ["int8-calibrated"]')
        return {fmt: [str(r) for r in names] for fmt, names in value.items()}
    if not isinstance(value, list):
        raise GemmaEdgeError("build spec: recipes must be a list or a table per format",
                             'e.g. recipes = ["int8-calibrated", "int4-calibrated"]')
    return {fmt: [str(r) for r in value] for fmt in formats}

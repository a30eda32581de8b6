"""Quantization recipes as data: which tensors get which integer grid, by which rounding.

One predicate decides per weight (mlx-lm's `class_predicate` idea): the tied embedding /
LM head (`lm_head`, 63 % of the 270M's weights, fed by 100x outlier channels) gets the
`head` spec, every other Linear the `body` spec. Everything else (norms, rotary tables)
stays float32.

Why the choices (measured on the real 270M, see bench/quantize_matrix.py):
- Weight-only int8 keeps activations float: ai-edge-quantizer's dynamic int8 (run-time
  int8 activations) scored mean KLD 0.023, weight-only 0.005 (docs/reference.md, "Peers' numbers and our targets"). On the rotated
  LiteRT export (the default, foundation/rotation.py) dynamic int8 scores 0.0023 (top-1
  97.9 %), weight-only int8-calibrated 0.0011.
- LiteRT runs blockwise int4 only with dynamic int8 activations (weight-only blockwise is
  silently left unquantized by ai-edge-quantizer 0.10). Channelwise int4 collapses the
  output when it is the body; the rotated head takes it (int4-head-calibrated: LiteRT 195
  MiB, KLD 0.076, top-1 85.5 %), and it is the only int4 LiteRT's EMBEDDING_LOOKUP has.
  onnxruntime runs both as MatMulNBits with int8 activations inside the kernel (accuracy
  level 4).
- ONNX MatMulNBits needs a power-of-two block >= 16 (K = 640 has no per-channel block). The
  float-activation int8 recipes (int8, int8-calibrated) use block 32, body and head: on the
  270M, 512 held-out tokens (MiB, KLD, top-1), RTN block 128: 265, 0.0018, 96.7 %;
  block 64: 272, 0.0013, 97.5 %; block 32: 288, 0.00063, 98.4 % (body 32 / head 128: 273,
  0.0012, 97.1 %); GPTQ block 128: 265, 0.0014, 97.5 %; block 32: 288, 0.00044, 98.2 %.
  They are the faithful int8 (int8-dynamic is the fast one), so 23 MiB and decode speed
  buy the accuracy: float-activation 8-bit MatMulNBits decoded at 1.6 (block 128), 1.0
  (64) and 0.8 tok/s (32), 8 steps after a 128-token prefill in one session (the 2.6 below
  is an earlier `check` run's figure for block 128). onnxruntime 1.32 has no fast
  float-activation kernel for 8-bit MatMulNBits: at accuracy level 0 the 270M decoded at
  2.6 tok/s (fp32: 18-24). `int8-dynamic` is the fast ONNX int8: accuracy level 4 (int8
  activations, quantized in the kernel per weight block) with small blocks, which keep
  Gemma's outlier channels apart. GPTQ on the 270M, 512 held-out tokens (body/head block:
  MiB, KLD, top-1): 32/128: 274, 0.0033, 96.7 %; 32/32: 289, 0.0024, 96.7 %; 16/32: 301,
  0.0017, 96.9 %; 16/16: 321, 0.0016, 96.9 %; decode 49-57 tok/s for all. The body's block
  matters most: 16 for the body, 32 for the head (level 0, block 128: 265 MiB, 0.0014,
  97.3 %, 2.6 tok/s).
- int4-all-calibrated's head: block 64. GPTQ, the 270M, 512 held-out tokens (head block:
  MiB, KLD, decode ms/step in onnxruntime): 32: 161, 0.339, 17.8; 64: 151, 0.322, 16.7;
  128: 146, 0.446, 15.7. The model builder's int4 (block 32): 224 MiB, 0.49 then; 0.42 in
  the 2026-11-27 matrix run, where block 64 scored 0.31 (docs/results.md).
- int4-block* and int4-calibrated keep the head at int8 block 128 and put the body at 4
  bits. At the same size the other split is 2.5x closer to float: int4-head-calibrated, the
  head int4 (ONNX block 16, LiteRT per channel) and the body int8 (270M, 512 held-out
  tokens, MiB / KLD / top-1: ONNX 229 / 0.042 / 87.3 % against int4-calibrated's 226 /
  0.112 / 82.4 %; LiteRT 195 / 0.076 / 85.5 % against 228 / 0.104 / 82.8 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foundation.errors import GemmaEdgeError

FORMATS = ("tflite", "onnx")
HEAD = "lm_head"


@dataclass(frozen=True)
class TensorSpec:
    bits: int
    blocks: dict[str, int]  # per format: inputs per block, 0 = per output channel
    method: str = "rtn"  # "rtn" (round to nearest) or "gptq" (calibrated rounding)

    def block(self, fmt: str) -> int:
        return self.blocks[fmt]


@dataclass(frozen=True)
class Recipe:
    name: str
    doc: str
    body: TensorSpec
    head: TensorSpec
    # how the runtime treats activations, per format
    activations: dict[str, str] = field(default_factory=lambda: {"tflite": "float", "onnx": "int8-in-kernel"})
    refused: dict[str, str] = field(default_factory=dict)  # format -> why this recipe is not offered

    def spec_for(self, name: str) -> TensorSpec:
        """The predicate: the tied embedding / LM head is its own decision."""
        return self.head if name == HEAD else self.body

    @property
    def calibrated(self) -> bool:
        return "gptq" in (self.body.method, self.head.method) or self.activations.get("tflite") == "static-int8"


INT8_HEAD = TensorSpec(8, {"tflite": 0, "onnx": 128})
# the float-activation int8 recipes: ONNX block 32, body and head (see the module doc)
INT8_32 = TensorSpec(8, {"tflite": 0, "onnx": 32})
INT8_32_GPTQ = TensorSpec(8, {"tflite": 0, "onnx": 32}, "gptq")
INT8_HEAD_GPTQ = TensorSpec(8, {"tflite": 0, "onnx": 128}, "gptq")
# ONNX int8-dynamic: body block 16, head block 32 (measured on the 270M, see the module doc)
INT8_GPTQ = TensorSpec(8, {"tflite": 0, "onnx": 16}, "gptq")
INT8_HEAD_32_GPTQ = TensorSpec(8, {"tflite": 0, "onnx": 32}, "gptq")

RECIPES: dict[str, Recipe] = {}


def _add(recipe: Recipe) -> None:
    RECIPES[recipe.name] = recipe


_add(Recipe("int8", "int8 weights (LiteRT per channel, ONNX block 32), float activations, "
            "round to nearest", INT8_32, INT8_32, activations={"tflite": "float", "onnx": "float"}))
_add(Recipe("int8-calibrated", "int8 weights with GPTQ rounding on calibration text, float "
            "activations (the faithful int8: slow on ONNX, see int8-dynamic)",
            INT8_32_GPTQ, INT8_32_GPTQ, activations={"tflite": "float", "onnx": "float"}))
_add(Recipe("int8-dynamic", "int8 weights with GPTQ rounding, activations quantized to int8 at "
            "run time, the head too: the fast int8 in both runtimes (LiteRT per channel, dynamic "
            "int8; ONNX blocks 16 / head 32 at accuracy level 4)",
            INT8_GPTQ, INT8_HEAD_32_GPTQ, activations={"tflite": "dynamic-int8", "onnx": "int8-in-kernel"}))
_add(Recipe("int8-static", "int8 weights and int16 activations calibrated on text "
            "(ai-edge-quantizer static_wi8_ai16 + calibrate())",
            TensorSpec(8, {"tflite": 0, "onnx": 128}), INT8_HEAD,
            activations={"tflite": "static-int16", "onnx": "static"},
            refused={"onnx": "static QDQ int8 ran 5x slower and less faithful than weight-only "
                             "in onnxruntime on this model (docs/reference.md); use --recipe int8",
                     "tflite": "not built yet: it needs calibrated ranges for every signature's "
                               "KV-cache inputs, and Gemma's 1e5 residual stream leaves int8 "
                               "activations no resolution; use --recipe int8"}))
for _b in (32, 64, 128):
    _add(Recipe(f"int4-block{_b}", f"int4 weights in blocks of {_b}, round to nearest; head int8",
                TensorSpec(4, {"tflite": _b, "onnx": _b}), INT8_HEAD,
                activations={"tflite": "dynamic-int8", "onnx": "int8-in-kernel"}))
_add(Recipe("int4-all-block32", "int4 block 32 everywhere, the head too (the peers' choice), "
            "round to nearest", TensorSpec(4, {"tflite": 32, "onnx": 32}),
            TensorSpec(4, {"tflite": 32, "onnx": 32}),
            activations={"tflite": "dynamic-int8", "onnx": "int8-in-kernel"},
            refused={"tflite": "ai-edge-quantizer 0.10 has no blockwise int4 for EMBEDDING_LOOKUP, "
                               "and the table is shared with the LM head; use int4-block32"}))
_add(Recipe("int4-all-calibrated", "int4 everywhere, the head too, GPTQ rounding: body block 32, "
            "head block 64 (smallest and fastest to decode: the head is 63 % of the bytes read "
            "per token)", TensorSpec(4, {"tflite": 32, "onnx": 32}, "gptq"),
            TensorSpec(4, {"tflite": 32, "onnx": 64}, "gptq"),
            activations={"tflite": "dynamic-int8", "onnx": "int8-in-kernel"},
            refused={"tflite": RECIPES["int4-all-block32"].refused["tflite"].replace(
                "int4-block32", "int4-calibrated")}))
_add(Recipe("int4-head-calibrated", "4 bits where they cost least, the head: head int4 (ONNX block "
            "16, LiteRT per channel), body int8 (ONNX block 32, LiteRT per channel), GPTQ rounding, "
            "int8 activations (what the measured sensitivity picks within 230 MiB on the 270M)",
            INT8_32_GPTQ, TensorSpec(4, {"tflite": 0, "onnx": 16}, "gptq"),
            activations={"tflite": "dynamic-int8", "onnx": "int8-in-kernel"}))
_add(Recipe("int4-calibrated", "int4 block 32 with GPTQ rounding on calibration text; head "
            "int8 with GPTQ rounding", TensorSpec(4, {"tflite": 32, "onnx": 32}, "gptq"),
            INT8_HEAD_GPTQ, activations={"tflite": "dynamic-int8", "onnx": "int8-in-kernel"}))


# GGUF (llama.cpp, Ollama): llama.cpp's own block types, blocks of 32 with float16 scales. The
# head (tied embedding) stays Q8_0 in q4_0, as llama-quantize keeps token_embd when its row
# length is not a multiple of 256 (the 270M's 640), so sizes compare with llama.cpp's Q4_0.
_NOT_GGUF = "not a GGUF block type"
_GGUF_ONLY = {"tflite": "a GGUF block type (llama.cpp); use int8 / int4 recipes",
              "onnx": "a GGUF block type (llama.cpp); use int8 / int4 recipes"}
Q8_0 = TensorSpec(8, {"gguf": 32})
Q8_0_GPTQ = TensorSpec(8, {"gguf": 32}, "gptq")
_add(Recipe("q8_0", "llama.cpp Q8_0 (int8 blocks of 32, float16 scales), round to nearest",
            Q8_0, Q8_0, activations={"gguf": "float"}, refused=dict(_GGUF_ONLY)))
_add(Recipe("q8_0-calibrated", "llama.cpp Q8_0 with GPTQ rounding on calibration text",
            Q8_0_GPTQ, Q8_0_GPTQ, activations={"gguf": "float"}, refused=dict(_GGUF_ONLY)))
_add(Recipe("q4_0", "llama.cpp Q4_0 (4-bit blocks of 32, float16 scales), round to nearest; "
            "head Q8_0 as llama-quantize keeps it", TensorSpec(4, {"gguf": 32}), Q8_0,
            activations={"gguf": "float"}, refused=dict(_GGUF_ONLY)))
_add(Recipe("q4_0-calibrated", "llama.cpp Q4_0 with GPTQ rounding and a clip search on "
            "calibration text; head Q8_0 with GPTQ rounding",
            TensorSpec(4, {"gguf": 32}, "gptq"), Q8_0_GPTQ,
            activations={"gguf": "float"}, refused=dict(_GGUF_ONLY)))
GGUF_RECIPES = tuple(name for name, r in RECIPES.items() if "gguf" in r.body.blocks)
for _recipe in RECIPES.values():
    if "gguf" not in _recipe.body.blocks:
        _recipe.refused.setdefault("gguf", f"{_NOT_GGUF}; use one of: {', '.join(GGUF_RECIPES)}")


def get_recipe(name: str, fmt: str) -> Recipe:
    if name not in RECIPES:
        raise GemmaEdgeError(f"unknown recipe '{name}'", f"use one of: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if fmt in recipe.refused:
        raise GemmaEdgeError(f"recipe '{name}' is not offered for {fmt}: {recipe.refused[fmt]}")
    return recipe

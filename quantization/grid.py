"""The exact integer grids the runtimes execute, and round-to-nearest onto them.

A weight [N, K] (torch layout: N outputs, K inputs) is split along K into blocks of
`block` inputs (block 0 = one block per output row: per-channel). Every block gets one
symmetric scale, `absmax / qmax`, and integer codes in [qmin, qmax]; the runtime computes
with `codes * scale`. Both backends reproduce this grid bit for bit:

- LiteRT (ai-edge-quantizer): symmetric; 8-bit codes in the narrow range [-127, 127],
  4-bit codes in [-8, 7] (it unpacks them to int8); blockwise scales
  are stored as float16 after rounding to a bfloat16 mantissa, so we round them the same
  way before choosing codes (otherwise the codes we pick are not the ones that run).
- onnxruntime MatMulNBits: unsigned codes with the implicit zero point 2**(bits-1), so
  the signed range is [-2**(bits-1), qmax]; scales are float32.
- llama.cpp (GGUF Q8_0 / Q4_0): blocks of 32, one float16 scale `d` each; Q8_0 codes
  int8, Q4_0 codes q in [0, 15] meaning q - 8 (quantization/gguf_backend.py), so scales
  are rounded to float16 before choosing codes.

Calibrated rounding (gptq.py) chooses other codes on the same grid and keeps every
block's largest magnitude at ±qmax, so a runtime quantizer that recomputes the scale from
the snapped weight finds the same scale and the same codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    bits: int
    block: int  # inputs per block; 0 = per output channel
    signed_min: int  # most negative code the runtime executes
    bf16_scales: bool  # scales rounded to a bfloat16 mantissa (LiteRT blockwise)
    fp16_scales: bool = False  # scales stored as float16 (llama.cpp's block types)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def block_size(self, k: int) -> int:
        """Inputs per block for a K-input weight (tiny test models may have K < block)."""
        return k if self.block == 0 else min(self.block, k)

    @property
    def label(self) -> str:
        return f"int{self.bits}-" + ("channel" if self.block == 0 else f"block{self.block}")


def grid_for(fmt: str, bits: int, block: int) -> Grid:
    """The grid `fmt` ('tflite' or 'onnx') executes for `bits`-bit weights in `block`s."""
    if fmt == "tflite":
        low = -(2 ** (bits - 1)) + (1 if bits >= 8 else 0)
        return Grid(bits, block, low, bf16_scales=block != 0)
    if fmt == "onnx":
        return Grid(bits, block, -(2 ** (bits - 1)), bf16_scales=False)
    if fmt == "gguf":
        return Grid(bits, block, -(2 ** (bits - 1)), bf16_scales=False, fp16_scales=True)
    raise ValueError(f"no integer grid for format {fmt!r}")


def round_scale(scale: np.ndarray, grid: Grid) -> np.ndarray:
    scale = np.maximum(scale.astype(np.float32), np.float32(1e-9))
    if grid.bf16_scales:
        import ml_dtypes

        scale = scale.astype(ml_dtypes.bfloat16).astype(np.float16).astype(np.float32)
    if grid.fp16_scales:  # the smallest positive float16 keeps an all-zero block finite
        scale = np.maximum(scale.astype(np.float16), np.float16(2 ** -24)).astype(np.float32)
    return scale


# elements per row chunk of a weight's float temporaries (64 MB each): a 4B model's LM head
# (262,144 x 2,560) would otherwise need ~2.7 GB per temporary, five of them at once
ROW_CHUNK = 1 << 24


def row_chunks(n: int, k: int) -> Iterator[slice]:
    rows = max(1, ROW_CHUNK // max(k, 1))
    for start in range(0, n, rows):
        yield slice(start, min(start + rows, n))


def block_scales(weight: np.ndarray, grid: Grid) -> np.ndarray:
    """Per-block scales [N, K/block] from the weight's block maxima."""
    n, k = weight.shape
    b = grid.block_size(k)
    if k % b:
        raise ValueError(f"input dimension {k} is not a multiple of block {b}")
    absmax = np.empty((n, k // b), np.float32)
    for rows in row_chunks(n, k):
        absmax[rows] = np.abs(weight[rows].reshape(-1, k // b, b)).max(axis=2)
    return round_scale(absmax / grid.qmax, grid)


def expand(scales: np.ndarray, k: int) -> np.ndarray:
    """Scales [N, K/block] -> one scale per weight element [N, K]."""
    return np.repeat(scales, k // scales.shape[1], axis=1)


def quantize_rtn(weight: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest codes (int8 array [N, K]) and scales [N, K/block]."""
    weight = np.asarray(weight, dtype=np.float32)
    scales = block_scales(weight, grid)
    codes = np.empty(weight.shape, np.int8)
    for rows in row_chunks(*weight.shape):
        codes[rows] = np.clip(np.rint(weight[rows] / expand(scales[rows], weight.shape[1])),
                              grid.signed_min, grid.qmax)
    return codes, scales


def dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    n, k = codes.shape
    blocks = scales.shape[1]
    out = codes.reshape(n, blocks, k // blocks).astype(np.float32)
    out *= np.asarray(scales, np.float32)[:, :, None]
    return out.reshape(n, k)


def packed_bytes(shape: tuple[int, int], grid: Grid) -> int:
    """Bytes a runtime stores for this weight: codes plus one scale per block."""
    n, k = shape
    scale_bytes = 2 if grid.bf16_scales or grid.fp16_scales else 4
    return n * k * grid.bits // 8 + n * (k // grid.block_size(k)) * scale_bytes

"""Codes and scales for every quantized weight of a model, computed in PyTorch/numpy.

This is the one place a recipe meets a model: the predicate picks a spec per Linear,
RTN or GPTQ picks codes on the runtime's grid, and the backends (onnx_backend,
litert_backend) only write what is decided here. Each weight is found again in an
exported graph by the hash of its float bytes, which is exact and needs no names.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from quantization.grid import Grid, dequantize, grid_for, quantize_rtn
from quantization.recipes import HEAD, Recipe

log = logging.getLogger("gemma_edge")


@dataclass
class QuantizedWeight:
    name: str  # torch parameter owner, e.g. model.layers.0.mlp.down_proj
    grid: Grid
    codes: np.ndarray  # int8 [N, K]
    scales: np.ndarray  # float32 [N, K/block]
    method: str
    float_hash: str  # sha1 of the fp32 weight [N, K] as exported
    output_error: float | None = None  # relative layer-output error on calibration text
    probe: np.ndarray | None = None  # a strided sample of the float weight (see scale_of)
    weight_error: float | None = None  # ||W - Ŵ|| / ||W||
    parts: list[QuantizedWeight] | None = None  # column parts, as a LiteRT export stores the head

    def dequantized(self) -> np.ndarray:
        return dequantize(self.codes, self.scales)

    def scale_of(self, array: np.ndarray) -> float | None:
        """c if `array` is c x this float weight (a converter folded a constant into it,
        e.g. Gemma 2's final soft-cap divides the LM head by 30), else None."""
        if self.probe is None or array.shape != self.codes.shape:
            return None
        sample = np.asarray(array, np.float64).ravel()[:: _PROBE_STRIDE(array.size)]
        p = self.probe.astype(np.float64)
        c = float(sample @ p / max(p @ p, 1e-30))
        if c == 0 or np.abs(sample - c * p).max() > 1e-5 * np.abs(sample).max():
            return None
        return c


def _PROBE_STRIDE(size: int) -> int:  # noqa: N802
    return max(1, size // 4096)


def column_parts(qw: QuantizedWeight, weight: np.ndarray) -> list[QuantizedWeight]:
    """A blockwise weight as its column blocks, each per output channel: how a LiteRT
    export holds the LM head (litert_decoder.HeadParts), one scale per row of each part."""
    k = weight.shape[1]
    width = qw.grid.block_size(k)
    grid = Grid(qw.grid.bits, 0, qw.grid.signed_min, qw.grid.bf16_scales)
    parts = []
    for j, start in enumerate(range(0, k, width)):
        w = np.ascontiguousarray(weight[:, start:start + width])
        parts.append(QuantizedWeight(f"{qw.name}#{j}", grid, qw.codes[:, start:start + width],
                                     qw.scales[:, j:j + 1], qw.method, weight_hash(w),
                                     probe=w.ravel()[:: _PROBE_STRIDE(w.size)].copy()))
    return parts


def weight_hash(array: np.ndarray) -> str:
    # a memoryview, not tobytes(): no copy of a 2.7 GB head
    return hashlib.sha1(memoryview(np.ascontiguousarray(array, dtype=np.float32)).cast("B")).hexdigest()


def linear_names(model) -> list[str]:
    from torch import nn

    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def quantize_weights(ref, recipe: Recipe, fmt: str, *, calibration: str | None = None,
                     calibration_tokens: int = 4096, progress: bool = True,
                     head_parts: int = 0, stream_layers: bool | None = None
                     ) -> dict[str, QuantizedWeight]:
    """Every Linear of `ref.model` quantized as `recipe` says for `fmt`.

    head_parts: the column width of a LiteRT export's LM head parts (0: one tensor). The
    head is then quantized per output row of each part: blocks of that width.
    stream_layers: calibrate one decoder layer at a time (None: when all Hessians at once
    would pass HESSIAN_BUDGET bytes; see quantization/layer_calibration.py)."""
    from tqdm import tqdm

    from quantization.calibration import DEFAULT_CALIBRATION

    model = ref.model
    modules = dict(model.named_modules())
    names = linear_names(model)
    stats = Calibration({})
    if recipe.calibrated:
        stats = _calibration(ref, calibration or DEFAULT_CALIBRATION, calibration_tokens, names,
                             stream=stream_layers)
    out = {}
    bar = tqdm(total=len(names), desc=f"quantize {recipe.name}", unit="tensor",
               disable=not progress, leave=False)
    for group, hessians, factors in stats.groups(names):
        for name in group:
            out[name] = _decide(ref, modules[name].weight, name, recipe.spec_for(name), fmt,
                                head_parts, hessians, factors, stats.key)
            bar.update()
    bar.close()
    return {name: out[name] for name in names}


def _decide(ref, param, name, spec, fmt, head_parts, hessians, factors, calibration_key):
    from quantization.gptq import gptq_factors, gptq_quantize, output_error, weight_error

    weight = param.detach().float().numpy()
    split = head_parts and name == HEAD
    grid = grid_for(fmt, spec.bits, head_parts if split else spec.block(fmt))
    if split:  # each part is per channel: float32 row scales, not int4's bf16 block scales
        grid = Grid(grid.bits, grid.block, grid.signed_min, bf16_scales=False)

    def decide():
        if spec.method == "gptq":
            key = id(hessians[name])  # q/k/v and gate/up share one Hessian array
            if key not in factors:
                factors[key] = gptq_factors(hessians[name])
            codes, scales = gptq_quantize(weight, None, grid, factors=factors[key])
        else:
            codes, scales = quantize_rtn(weight, grid)
        err = output_error(weight, codes, scales, hessians[name]) if name in hessians else None
        qw = QuantizedWeight(name, grid, codes, scales, spec.method, weight_hash(weight), err,
                             weight.ravel()[:: _PROBE_STRIDE(weight.size)].copy(),
                             weight_error(weight, codes, scales))
        if split:
            qw.parts = column_parts(qw, weight)
        return qw

    # Recipes of one run that give a weight the same grid and rounding (LiteRT's int8-dynamic
    # and int4-calibrated share the head's int8 GPTQ) decide it once.
    calibration_id = calibration_key if name in hessians else None
    return ref.memoized("weight", (name, grid, spec.method, calibration_id), decide)


# All Hessians at once up to this many bytes (the 270M's: 0.9 GB; the 1B's: 10.5 GB)
HESSIAN_BUDGET = 2 << 30


@dataclass
class Calibration:
    """What calibration text tells about a model: each Linear's input Hessian, and the GPTQ
    factors derived from them (filled as recipes need them). Streamed (`layers` set), the
    Hessians come one decoder layer at a time and are dropped after use."""
    hessians: dict
    factors: dict = field(default_factory=dict)
    key: tuple | None = None  # (calibration text, tokens): what the weights' memo keys on
    layers: Callable[[], Iterator[dict]] | None = None

    def groups(self, names: list[str]) -> Iterator[tuple[list[str], dict, dict]]:
        """(names, their Hessians, a GPTQ factor cache) in model order."""
        if self.layers is None:
            yield names, self.hessians, self.factors
            return
        done = set()
        for hessians in self.layers():
            group = [n for n in names if n in hessians]
            done.update(group)
            yield group, hessians, {}
        yield [n for n in names if n not in done], {}, {}


def _calibration(ref, spec: str, tokens: int, names: list[str], *,
                 stream: bool | None = None) -> Calibration:
    """Hessians of every Linear's input on the calibration text, and a cache for the GPTQ
    factors derived from them: computed once per loaded model, so one `quantize` run (what a
    build runs, over every format's export) collects and inverts them once for all recipes.
    Streamed, only the (small) capture of the first layer's inputs is kept between recipes."""
    from quantization.calibration import calibration_batches, collect_hessians
    from quantization.layer_calibration import capture, hessian_bytes, layer_hessians, streamable

    def batches():
        found = calibration_batches(ref, spec, tokens=tokens)
        log.info("calibration: %d windows, %d tokens", len(found), sum(map(len, found)))
        return found

    at_once = hessian_bytes(ref.model, names)
    if stream is None:
        stream = at_once > HESSIAN_BUDGET and streamable(ref.model, names)
    if stream:
        def captured():
            windows = batches()
            return windows, capture(ref.model, windows)

        def layers():
            windows, inputs = ref.memoized("calibration-capture", (spec, tokens), captured)
            return layer_hessians(ref.model, windows, names, captured=inputs)

        log.info("calibration: one decoder layer at a time (%.1f GB of Hessians at once)",
                 at_once / 1e9)
        return Calibration({}, key=(spec, tokens), layers=layers)
    return ref.memoized("calibration", (spec, tokens),
                        lambda: Calibration(collect_hessians(ref.model, batches(), names),
                                            key=(spec, tokens)))

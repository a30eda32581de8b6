"""Calibrated rounding (GPTQ, Frantar et al. 2022) onto a runtime's exact grid.

Round-to-nearest picks each code alone. GPTQ walks the input columns in order and,
after rounding one, pushes its error onto the columns not yet rounded, weighted by the
inverse Hessian of the layer's inputs (H = XᵀX over calibration activations), so the
layer's *output* error on real text is what gets minimised, not the weight error.

Two constraints keep the result on the grid a runtime executes (see grid.py):
- scales are fixed up front from the original weight's block maxima (rounded the way the
  runtime rounds them);
- in every block the element that set the scale keeps the extreme code ±qmax, so a
  runtime quantizer that recomputes the scale from the snapped weight gets the same
  scale back and reproduces our codes exactly. GPTQ compensates that choice like any other.
  For the same reason codes stay in [-qmax, qmax] (a -8 in an int4 block whose extreme is
  +7 would raise the recomputed scale).
"""

from __future__ import annotations

import numpy as np

from quantization.grid import Grid, block_scales, expand


def gptq_quantize(weight: np.ndarray, hessian: np.ndarray, grid: Grid, *,
                  damp: float = 0.01, lazy_block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Codes [N, K] (int8) and scales [N, K/block] minimising ||(W - Ŵ) X||² for H = XᵀX."""
    import torch

    w0 = np.asarray(weight, dtype=np.float32)
    n, k = w0.shape
    scales = block_scales(w0, grid)
    step = torch.from_numpy(expand(scales, k))
    b = grid.block_size(k)
    blocks = np.abs(w0).reshape(n, k // b, b)
    pinned = np.zeros((n, k), dtype=bool)
    arg = blocks.argmax(axis=2) + np.arange(k // b)[None, :] * b
    pinned[np.arange(n)[:, None], arg] = True
    pin_code = torch.from_numpy(np.sign(w0) * grid.qmax)
    pinned_t = torch.from_numpy(pinned)

    w = torch.from_numpy(w0.copy())
    h = torch.from_numpy(np.asarray(hessian, dtype=np.float64)).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(k, dtype=h.dtype) * damp * torch.mean(torch.diag(h))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    hinv = hinv.to(torch.float32)

    codes = torch.zeros((n, k), dtype=torch.float32)
    for i1 in range(0, k, lazy_block):
        i2 = min(i1 + lazy_block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            s = step[:, col]
            q = torch.clamp(torch.round(w1[:, i] / s), -grid.qmax, grid.qmax)
            q = torch.where(pinned_t[:, col], pin_code[:, col], q)
            codes[:, col] = q
            err = (w1[:, i] - q * s) / h1[i, i]
            w1[:, i:] -= err[:, None] * h1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes.numpy().astype(np.int8), scales


def output_error(weight: np.ndarray, codes: np.ndarray, scales: np.ndarray,
                 hessian: np.ndarray) -> float:
    """tr(ΔW H ΔWᵀ) / tr(W H Wᵀ): the layer's relative output error on the calibration inputs."""
    delta = np.asarray(weight, np.float64) - codes.astype(np.float64) * expand(scales, codes.shape[1])
    w = np.asarray(weight, np.float64)
    return float(np.einsum("nk,kj,nj->", delta, hessian, delta)
                 / np.einsum("nk,kj,nj->", w, hessian, w))

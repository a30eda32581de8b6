"""The PyTorch reference runner: the model every artifact is checked against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime_check.runner import StepRunner


class TorchRunner(StepRunner):
    """Runs a transformers Gemma causal LM with an explicit KV cache, fp32 on the CPU."""

    name = "torch"

    def __init__(self, model, *, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self._cache = None
        self._pos = 0

    def reset(self) -> None:
        self._cache, self._pos = None, 0

    def _step(self, token_ids: Sequence[int]) -> np.ndarray:
        import torch
        from transformers import DynamicCache

        if not token_ids:
            raise ValueError("prefill needs at least one token")
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config)
        n = len(token_ids)
        positions = torch.arange(self._pos, self._pos + n)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([list(token_ids)], dtype=torch.long),
                position_ids=positions[None, :],
                cache_position=positions,
                cache=self._cache,
                use_cache=True,
            )
        self._pos += n
        return out.logits[0].float().numpy()

    def close(self) -> None:
        self.reset()


def full_forward_logits(model, token_ids: Sequence[int]) -> np.ndarray:
    """Logits of one forward pass over the whole sequence, no cache: the ground truth."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([list(token_ids)], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()

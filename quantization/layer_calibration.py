"""The calibration Hessians one decoder layer at a time, for models whose Hessians do not fit.

`calibration.collect_hessians` keeps the input Hessian of every Linear of the model from
one forward pass: for Gemma 3 1B that is 10.5 GB of float64 (a down_proj's is
intermediate_size² x 8 B, 382 MB, x 26 layers), for the 4B 28.5 GB. Here the same
matrices come one layer at a time:

1. one forward pass with every decoder layer replaced by a recorder that keeps its call
   arguments (masks, position embeddings: shared objects, small) and passes the hidden
   state through unchanged, so the pass costs the embedding lookup and nothing else; the
   first layer's input (the embeddings) is kept per calibration window;
2. each layer runs on the kept inputs with the Hessian hooks on its own Linears; its
   outputs are the next layer's inputs; its Hessians are handed out, used and dropped;
3. the final norm of the last outputs is the LM head's input.

The layers see exactly the activations of the float model's own forward pass (the same
calls on the same tensors), so the Hessians, and every recipe's rounding, are those of
`collect_hessians`; tests/test_layer_calibration.py checks they are equal. Peak memory
holds one layer's Hessians (0.4 GB for the 1B) and the hidden states of the calibration
windows (18 MB).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from quantization.recipes import HEAD


def hessian_bytes(model, names: list[str]) -> int:
    """What `collect_hessians` would hold: one float64 K x K matrix per distinct input
    (q/k/v share one, gate/up one)."""
    from quantization.calibration import shared_input

    modules = dict(model.named_modules())
    keys = {shared_input(n): modules[n].in_features for n in names}
    return sum(8 * k * k for k in keys.values())


def _parts(model):
    """(base model, its decoder layers, its final norm) or None if the model is not laid out
    as a decoder stack (then the caller collects all Hessians at once)."""
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    norm = getattr(base, "norm", None) or getattr(base, "final_norm", None)
    if layers is None or norm is None:
        return None
    return base, layers, norm


def streamable(model, names: list[str]) -> bool:
    """Every Linear is inside a decoder layer or is the LM head."""
    parts = _parts(model)
    if parts is None:
        return False
    prefixes = [f"model.layers.{i}." for i in range(len(parts[1]))]
    return all(n == HEAD or any(n.startswith(p) for p in prefixes) for n in names)


class _Recorder:
    """Stands in for a decoder layer during the capture pass: keeps its call arguments."""

    def __init__(self, calls: list):
        self.calls = calls

    def __call__(self, hidden, *args, **kwargs):
        self.calls.append((args, kwargs))
        return hidden


def capture(model, batches: list[list[int]]) -> tuple[list, list[list]]:
    """(the first layer's input per window, per layer: its (args, kwargs) per window)."""
    import torch

    base, layers, _norm = _parts(model)
    calls: list[list] = [[] for _ in layers]
    inputs: list = []
    first = layers[0].register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
    for layer, layer_calls in zip(layers, calls, strict=True):
        layer.forward = _Recorder(layer_calls)  # an instance attribute over the class's method
    try:
        with torch.no_grad():
            for batch in batches:
                base(input_ids=torch.tensor([batch]), use_cache=False)
    finally:
        first.remove()
        for layer in layers:
            del layer.forward
    return inputs, calls


def layer_hessians(model, batches: list[list[int]], names: list[str], *,
                   captured=None) -> Iterator[dict[str, Any]]:
    """Yield {name: Hessian} for the Linears of each decoder layer in turn, then the LM
    head's (if named); arrays shared between q/k/v and gate/up as in `collect_hessians`."""
    import torch

    from quantization.calibration import hessian_hooks

    _base, layers, norm = _parts(model)
    inputs, calls = captured if captured is not None else capture(model, batches)
    hidden = list(inputs)
    for i, layer in enumerate(layers):
        mine = [n for n in names if n.startswith(f"model.layers.{i}.")]
        with hessian_hooks(model, mine) as acc, torch.no_grad():
            for w, (args, kwargs) in enumerate(calls[i]):
                out = layer(hidden[w], *args, **kwargs)
                hidden[w] = out[0] if isinstance(out, tuple) else out
        if mine:
            yield acc.result(mine)
    if HEAD in names:
        with hessian_hooks(model, []) as acc, torch.no_grad():
            for h in hidden:
                acc.feed(HEAD, norm(h))
        yield acc.result([HEAD])

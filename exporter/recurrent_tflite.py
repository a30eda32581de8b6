"""RecurrentGemma -> LiteRT with its state as signature inputs and outputs.

One .tflite with a `decode` signature (1 token) and `prefill_<T>` signatures (T tokens,
the parallel scan of exporter/recurrent_decoder.py, not T copies of the step); every
signature takes and returns the whole state, so the graph holds no variables. TFLite
names cannot hold dots: the state is `past_conv_{i}`, `past_recurrent_{i}`,
`past_key_values_{i}_key` in and `present_conv_{i}`, `present_recurrent_{i}`,
`present_{i}_key` out (the ONNX names with `_`). A prompt goes in as prefill_<T> chunks,
then the remainder as decode steps: nothing is padded, because a padded token would
enter the recurrence.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir, fp32_weight_bytes, write_manifest
from foundation.errors import GemmaEdgeError, require_extra
from foundation.formats import FORMATS
from foundation.sources import ReferenceModel

log = logging.getLogger("gemma_edge")

MODEL_FILE = FORMATS["tflite"].model_file
DEFAULT_PREFILL_LENGTHS = (32,)


def export_recurrent_tflite(ref: ReferenceModel, out_dir: str | Path, *, overwrite: bool = False,
                            record: dict[str, Any] | None = None,
                            prefill_lengths: tuple[int, ...] | None = None,
                            cache_length: int | None = None, head_block: int | None = None,
                            rotate: bool | None = None) -> dict[str, Any]:
    """Write OUT_DIR/{model.tflite, tokenizer files, manifest.json}."""
    if cache_length or head_block or rotate:
        raise GemmaEdgeError("--cache-length, --head-block and --rotate do not apply to "
                             "RecurrentGemma (its state has a fixed size; no rotation path)",
                             "leave them away; --prefill-lengths sets the prefill chunks")
    lengths = tuple(sorted({int(t) for t in (prefill_lengths or DEFAULT_PREFILL_LENGTHS)}))
    if not lengths or lengths[0] < 2:
        raise GemmaEdgeError(f"prefill lengths must be integers of 2 or more, not {lengths}",
                             "e.g. --prefill-lengths 32 (one token is the decode signature)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GemmaEdgeError(f"{out_dir} already exists", "pass --overwrite or choose another --out")
    require_extra("tflite", {"litert_torch": "litert-torch", "ai_edge_litert": "ai-edge-litert"})
    import litert_torch
    import torch

    from exporter.recurrent_decoder import state_layout
    from exporter.tflite_export import _converter_chatter

    started = time.time()
    layout = state_layout(ref.model.config)
    module = _Signatures(ref.model, layout).eval()
    with atomic_output_dir(out_dir, overwrite=overwrite,
                           needs_bytes=fp32_weight_bytes(ref.model)) as tmp:
        log.info("converting %s to LiteRT: decode + prefill %s, state as signature I/O",
                 ref.spec, "/".join(map(str, lengths)))
        with torch.no_grad(), _converter_chatter(log.isEnabledFor(logging.DEBUG)):
            converter = litert_torch.signature("decode", module, sample_kwargs=module.sample(1))
            for length in lengths:
                converter = converter.signature(f"prefill_{length}", module,
                                                sample_kwargs=module.sample(length))
            converter.convert(lightweight_conversion=True,
                              runtime_constant_folding=False).export(str(tmp / MODEL_FILE))
        ref.tokenizer.save_pretrained(tmp)
        cfg = ref.model.config
        state = {"tensors": [{"input": _flat(i), "output": _flat(o), "shape": s, "kind": k,
                              "dtype": "float32"} for i, o, s, k in layout],
                 "window": int(cfg.attention_window_size), "conv1d_width": int(cfg.conv1d_width),
                 "lru_width": int(cfg.lru_width),
                 "reset": "position 0 resets every state inside the graph"}
        manifest = write_manifest(
            tmp, stage="export", started=started, packages=FORMATS["tflite"].export_tools,
            inputs={"source": ref.spec, "source_sha256": ref.sha256, "family": ref.family.name,
                    "variant": ref.variant},
            extra={"format": "tflite", "recipe": "fp32", "model_file": MODEL_FILE,
                   "graph": {"signatures": ["decode", *(f"prefill_{t}" for t in lengths)],
                             "prefill_lengths": list(lengths), "state": state},
                   "notes": ref.notes, **(record or {})},
        )
    log.info("wrote %s (%.1f s)", out_dir, manifest["wall_seconds"])
    return manifest


def _flat(name: str) -> str:
    return name.replace(".", "_")


def _module_class():
    import torch

    from exporter.recurrent_decoder import RecurrentStateDecoder

    class Signatures(torch.nn.Module):
        """The state decoder with named (keyword) inputs and a dict of named outputs."""

        def __init__(self, model, layout) -> None:
            super().__init__()
            self.decoder = RecurrentStateDecoder(model)
            self.layout = [(_flat(i), _flat(o), s) for i, o, s, _k in layout]

        def forward(self, input_ids, position_ids, **state):
            out = self.decoder(input_ids, position_ids, *(state[i] for i, _o, _s in self.layout))
            return {"logits": out[0], **{o: t for (_i, o, _s), t in zip(self.layout, out[1:],
                                                                         strict=True)}}

        def sample(self, length: int) -> dict:
            return {"input_ids": torch.zeros(1, length, dtype=torch.int32),
                    "position_ids": torch.arange(length, dtype=torch.int32)[None],
                    **{i: torch.zeros(s) for i, _o, s in self.layout}}

    return Signatures


def _Signatures(model, layout):  # noqa: N802 - builds the torch module without importing torch at import time
    return _module_class()(model, layout)

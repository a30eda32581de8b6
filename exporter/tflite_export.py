"""torch → LiteRT: the static-cache decoder converted with litert-torch, one file with
`decode` and `prefill_<T>` signatures that share weights.

We convert our own cache-explicit module rather than litert-torch's `export_hf`: it
covers every family we support (Gemma 1, 2, 3), gives per-position prefill logits
for parity, and converts from the already-loaded model without re-reading the
checkpoint (export_hf peaked at 6.5 GB RSS on the 270M).
"""

from __future__ import annotations

import contextlib
import io
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
DEFAULT_PREFILL_LENGTHS = (32, 128, 512)
DEFAULT_CACHE_LENGTH = 1024


def export_tflite(ref: ReferenceModel, out_dir: str | Path, *, overwrite: bool = False,
                  record: dict[str, Any] | None = None,
                  prefill_lengths: tuple[int, ...] | None = None,
                  cache_length: int | None = None,
                  lightweight: bool = True, head_block: int = 0,
                  rotate: bool | None = None) -> dict[str, Any]:
    """Write OUT_DIR/{model.tflite, tokenizer files, manifest.json}.

    lightweight=True is litert-torch's lazy-constant conversion: on the 270M it cut
    peak RSS from 6.4 to 4.25 GB and wall time from 128 to 70 s, same parity. What is
    left of the peak is the flatbuffer write (weights in torch, in MLIR and in the
    growing flatbuffer at once); paging the torch weights out before it did not help.
    head_block: store the LM head / tied embedding as column parts of this many inputs
    (litert_decoder.HeadParts: finer int8 scales, slower LiteRT-LM decode); 0 = one tensor.
    rotate: rotate the weights' input spaces (foundation/rotation.py), so LiteRT's per-row int8
    weights and dynamic int8 activations lose less; the same function in float. Default:
    on, unless the head is stored in column parts (the two do not combine).
    """
    if "tflite" not in ref.family.exports:
        raise GemmaEdgeError(f"the {ref.family.title} family has no TFLite export path yet")
    max_pos = getattr(ref.config, "max_position_embeddings", None) or DEFAULT_CACHE_LENGTH
    if cache_length is None:  # defaults adapt to small models; explicit values are checked
        cache_length = min(DEFAULT_CACHE_LENGTH, max_pos)
    if prefill_lengths is None:
        prefill_lengths = tuple(t for t in DEFAULT_PREFILL_LENGTHS if t <= cache_length) or (
            cache_length,)
    prefill_lengths = tuple(sorted(set(int(t) for t in prefill_lengths)))
    if not prefill_lengths or prefill_lengths[0] < 1:
        raise GemmaEdgeError("prefill lengths must be positive integers", "e.g. --prefill-lengths 32,128")
    if prefill_lengths[-1] > cache_length:
        raise GemmaEdgeError(f"prefill length {prefill_lengths[-1]} exceeds the KV cache "
                             f"length {cache_length}", "raise --cache-length or lower the prefill")
    if cache_length > max_pos:
        raise GemmaEdgeError(f"--cache-length {cache_length} exceeds the model's context of "
                             f"{max_pos} tokens", f"use at most {max_pos}")
    hidden = ref.config.hidden_size
    if head_block < 0 or (head_block and hidden % head_block):
        raise GemmaEdgeError(f"--head-block {head_block} does not divide the hidden size {hidden}",
                             "use 0 (one tensor) or a divisor of the hidden size, e.g. 64 or 128")
    if rotate is None:
        rotate = not head_block
    if rotate and head_block:
        raise GemmaEdgeError("--rotate and --head-block do not combine",
                             "use one of them (--rotate is the more accurate)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GemmaEdgeError(f"{out_dir} already exists", "pass --overwrite or choose another --out")
    require_extra("tflite", {"litert_torch": "litert-torch", "ai_edge_litert": "ai-edge-litert"})
    import litert_torch
    import torch

    from exporter.cache_decoder import CacheDecoder, decoder_facts
    from exporter.litert_decoder import StaticCacheDecoder

    started = time.time()
    from foundation.rotation import apply_to_decoder, rotated_copy

    model, rotation = rotated_copy(ref.model, in_place=ref.disposable) if rotate else (ref.model, None)
    module = StaticCacheDecoder(CacheDecoder(model, ref.family), cache_length,
                                head_block=head_block).eval()
    apply_to_decoder(module.decoder)
    with atomic_output_dir(out_dir, overwrite=overwrite,
                           needs_bytes=fp32_weight_bytes(ref.model)) as tmp:
        log.info("converting %s to LiteRT: decode + prefill %s, KV cache %d",
                 ref.spec, "/".join(map(str, prefill_lengths)), cache_length)
        with torch.no_grad(), _converter_chatter(log.isEnabledFor(logging.DEBUG)):
            converter = litert_torch.signature("decode", module, sample_kwargs=module.sample_inputs(1))
            for length in prefill_lengths:
                converter = converter.signature(f"prefill_{length}", module,
                                                sample_kwargs=module.sample_inputs(length))
            # Runtime constant folding round-trips the whole model through a second
            # flatbuffer (+1 copy of the weights at the peak); the graph folds nothing
            # that matters at run time, so leave it off.
            edge_model = converter.convert(lightweight_conversion=lightweight,
                                           runtime_constant_folding=False)
            facts = {**decoder_facts(module.decoder), "head_block": head_block,
                     "rotation": rotation.spec() if rotation else None}
            signatures = {name: _signature_shapes(module, length, facts["vocab_size"])
                          for name, length in [("decode", 1)] + [
                              (f"prefill_{t}", t) for t in prefill_lengths]}
            del converter, module, model
            edge_model.export(str(tmp / MODEL_FILE))
            del edge_model
        ref.tokenizer.save_pretrained(tmp)
        manifest = write_manifest(
            tmp, stage="export", started=started,
            packages=FORMATS["tflite"].export_tools,
            inputs={"source": ref.spec, "source_sha256": ref.sha256, "family": ref.family.name,
                    "variant": ref.variant},
            extra={"format": "tflite", "recipe": "fp32", "model_file": MODEL_FILE,
                   "graph": {"signatures": signatures, "cache_length": cache_length,
                             "prefill_lengths": list(prefill_lengths),
                             "kv_layout": {"k": "[1, kv_heads, cache_length, head_dim]",
                                           "v": "[1, kv_heads, head_dim, cache_length]"}, **facts},
                   "notes": ref.notes, **(record or {})},
        )
    log.info("wrote %s (%.1f s)", out_dir, manifest["wall_seconds"])
    return manifest


@contextlib.contextmanager
def _converter_chatter(verbose: bool):
    """litert-torch prints a stage-by-stage progress tree to stdout; keep it for --verbose only."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _signature_shapes(module, length: int, vocab: int) -> dict[str, Any]:
    """I/O shapes of one signature, from the sample inputs it was traced with.

    (Loading the written model into an interpreter to read them back would double the
    export's peak memory; the tests run every signature through the interpreter.)
    """
    inputs = {k: list(v.shape) for k, v in module.sample_inputs(length).items()}
    outputs = {"logits": [1, length, vocab],
               **{k: v for k, v in inputs.items() if k.startswith("kv_cache_")}}
    return {"inputs": inputs, "outputs": outputs}

"""Prefill signatures without logits, for the LiteRT-LM engine.

Our exports give every prefill position's logits: `gemma-edge check` compares them with
the reference position by position. LiteRT-LM never reads them (it holds the last prompt
token back and feeds it to the first decode step), yet the interpreter runs every op of
a signature: for the 270M that is a [T, 640] x [640, 262144] LM head per prefill, most
of the prefill's work. `strip_prefill_logits` drops the `logits` output of every
`prefill*` signature and the ops only it needed; the KV-cache outputs are untouched
(tests compare them bit for bit), and the decode signature keeps its logits.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("gemma_edge")
LOGITS = "logits"
FLATBUFFER_LIMIT = 2**31 - 2**26  # flatbuffers address 2 GiB; keep room for the graph


def strip_prefill_logits(src: str | Path, dst: str | Path) -> dict[str, int]:
    """Write `src` to `dst` with the prefill signatures' logits (and their ops) removed.

    Returns ops removed per signature (empty when no prefill signature had logits).
    """
    import shutil

    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils

    if Path(src).stat().st_size > FLATBUFFER_LIMIT:
        log.warning("note: %s is too large to rewrite in one flatbuffer; its prefill signatures "
                    "keep their logits", src)
        shutil.copyfile(src, dst)
        return {}
    model = flatbuffer_utils.read_model(Path(src))
    for buffer in model.buffers or []:
        # weights stored after the flatbuffer (offset buffers, as ai-edge-quantizer writes
        # them) come back as memoryviews, which the generated Pack() copies byte by byte
        if buffer.data is not None and not isinstance(buffer.data, np.ndarray):
            buffer.data = np.frombuffer(buffer.data, dtype=np.uint8)
    removed: dict[str, int] = {}
    for sig in model.signatureDefs or []:
        key = _name(sig.signatureKey)
        if not key.startswith("prefill"):
            continue
        names = [_name(t.name) for t in sig.outputs]
        if LOGITS not in names:
            continue
        out = sig.outputs.pop(names.index(LOGITS))
        subgraph = model.subgraphs[sig.subgraphIndex]
        subgraph.outputs = [int(i) for i in subgraph.outputs if int(i) != out.tensorIndex]
        removed[key] = _drop_dead_ops(subgraph)
    flatbuffer_utils.write_model(model, Path(dst))
    return removed


def _name(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _drop_dead_ops(subgraph) -> int:
    """Remove ops none of whose outputs reach a subgraph output (ops run in list order,
    so one backward pass finds them all)."""
    live = {int(i) for i in subgraph.outputs}
    kept = []
    for op in reversed(subgraph.operators):
        outputs = [int(i) for i in op.outputs if int(i) >= 0]
        if any(i in live for i in outputs):
            kept.append(op)
            live.update(int(i) for i in op.inputs if int(i) >= 0)
    removed = len(subgraph.operators) - len(kept)
    subgraph.operators = kept[::-1]
    return removed

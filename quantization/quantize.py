"""`gemma-edge quantize EXPORT_DIR --recipe NAME`: a float export in, a quantized one out.

The export's manifest names its source; the source model is loaded (calibration runs on
it), the recipe decides codes per weight in numpy/torch (weights.py), and the format's
backend writes them. The result is a new artifact directory with its own manifest and the
same runner interface, so `gemma-edge check` verifies it like any export.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from foundation.artifacts import atomic_output_dir, require_free_space, tree_bytes, write_manifest
from foundation.errors import GemmaEdgeError
from foundation.families import implementation
from foundation.formats import FORMATS, resolve
from foundation.integrity import refuse_overlap, verify_artifact

log = logging.getLogger("gemma_edge")

_COPIED = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
           "special_tokens_map.json", "tokenizer.model")


def quantize_export(export_dir: str | Path, out_dir: str | Path, recipe_name: str, *,
                    calibration: str | None = None, calibration_tokens: int = 4096, ref=None,
                    overwrite: bool = False, progress: bool = True, record: dict | None = None,
                    onnx_accuracy_level: int | None = None,
                    last_use: bool = False) -> dict[str, Any]:
    """`onnx_accuracy_level` overrides the recipe's (see quantization.onnx_backend).
    last_use: nothing reads `ref`'s weights after this recipe's codes are decided, so they
    are freed before the backend writes the artifact."""
    from foundation.sources import load_source
    from quantization.recipes import get_recipe

    export_dir, out_dir = Path(export_dir), Path(out_dir)
    manifest = verify_artifact(export_dir, "export", "`gemma-edge export`")
    refuse_overlap(out_dir, export_dir)
    fmt = manifest.get("format")
    if manifest.get("recipe", "fp32") != "fp32":
        raise GemmaEdgeError(f"{export_dir} is already quantized ({manifest['recipe']})",
                             "quantize the fp32 export instead")
    if fmt not in FORMATS:
        raise GemmaEdgeError(f"{export_dir} has format '{fmt}', which cannot be quantized",
                             f"pass an export directory of one of: {', '.join(FORMATS)}")
    form = FORMATS[fmt]
    recipe = get_recipe(recipe_name, fmt)
    if out_dir.exists() and not overwrite:
        raise GemmaEdgeError(f"{out_dir} already exists", "pass --overwrite or choose another --out")
    # before minutes of calibration: an int8 artifact is about a quarter of the fp32 export
    require_free_space(out_dir, tree_bytes(export_dir) // 4, f"quantizing to {out_dir.name}")
    started = time.time()
    inputs = manifest["inputs"]
    if ref is None:
        ref = load_source(inputs["source"], variant=inputs.get("variant"))
    if inputs.get("source_sha256") not in (None, ref.sha256):
        raise GemmaEdgeError(f"{export_dir} was exported from a different model than {ref.spec} "
                             "now is (source hash changed)", "re-export, then quantize")
    graph = manifest.get("graph", {})
    head_parts = graph.get("head_block", 0) if fmt == "tflite" else 0
    keep_float = []
    qref = ref
    if graph.get("rotation"):  # the export holds rotated weights (foundation/rotation.py)
        from foundation.rotation import rotated_reference

        qref = rotated_reference(ref, graph["rotation"])
        keep_float = qref.model.gemma_edge_rotation.matrices()
    # a family whose graphs are not one text decoder (vision: docs/vision.md) decides its own
    weigh = resolve(implementation(inputs.get("family"), f"{fmt}.weights",
                                   "quantization.weights:quantize_weights"))
    weights = weigh(qref, recipe, fmt, calibration=calibration,
                               calibration_tokens=calibration_tokens, progress=progress,
                               head_parts=head_parts)
    if last_use:
        del qref
        ref.release_weights()
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        quantizer = implementation(inputs.get("family"), f"{fmt}.quantizer", form.quantizer)
        stats = resolve(quantizer)(export_dir, tmp, weights, recipe, keep_float=keep_float,
                                        accuracy_level=onnx_accuracy_level)
        for name in _COPIED:
            if (export_dir / name).is_file():
                shutil.copy2(export_dir / name, tmp / name)
        errors = [qw.output_error for qw in weights.values() if qw.output_error is not None]
        result = write_manifest(
            tmp, stage="quantize", started=started, packages=form.tools,
            inputs={**inputs, "export": str(export_dir),
                    "export_sha256": manifest["files"][manifest["model_file"]]["sha256"]},
            extra={"format": fmt, "recipe": recipe.name, "model_file": manifest["model_file"],
                   "graph": manifest.get("graph", {}), "notes": manifest.get("notes", []), **(record or {}),
                   **{k: manifest[k] for k in ("graphs", "vision") if k in manifest},
                   "quantization": {
                       "doc": recipe.doc,
                       "body": {"grid": _grid_label(weights, head=False), "method": recipe.body.method},
                       "head": {"grid": _grid_label(weights, head=True), "method": recipe.head.method},
                       "calibration": (calibration or "builtin:calibration") if recipe.calibrated else None,
                       "mean_layer_output_error": float(np.mean(errors)) if errors else None,
                       # per Linear, in model order: the report's per-layer error plot
                       "layers": [{"name": qw.name, "grid": qw.grid.label,
                                   "weight_error": qw.weight_error,
                                   "output_error": qw.output_error} for qw in weights.values()],
                       **stats}},
        )
    log.info("wrote %s (%.1f s)", out_dir, result["wall_seconds"])
    return result


def _grid_label(weights, *, head: bool) -> str | None:
    from quantization.recipes import HEAD

    labels = {qw.grid.label for name, qw in weights.items() if (name == HEAD) == head}
    return ", ".join(sorted(labels)) or None

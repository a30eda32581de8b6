"""PEFT LoRA adapters on top of any source: checked, then merged into the weights.

A fine-tuned model arrives as a base checkpoint plus a PEFT adapter directory
(`adapter_config.json` + `adapter_model.safetensors`). Every later stage sees one plain
transformers model whose Linear weights hold W + (alpha/r) B A (PEFT's own merge, so
rsLoRA and DoRA scale the way PEFT trains them); `check` compares artifacts against the
unmerged PEFT model, so a wrong merge cannot pass unseen.

The adapter travels inside the source spec, `BASE+adapter:DIR`, so every stage that
reloads a source from a manifest (quantize, check, the build's child processes) reloads
the adapted model, and the source sha256 covers the adapter's bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from pathlib import Path
from typing import Any

from foundation.artifacts import sha256_files
from foundation.errors import SourceError

log = logging.getLogger("gemma_edge")

ADAPTER_MARK = "+adapter:"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_FIX = "pass a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors)"
# the tied embedding is also the LM head: an adapter on one of them changes both once merged
_TIED = ("embed_tokens", "lm_head")


def with_adapter(source: str, adapter: str | Path | None) -> str:
    """The source spec that carries `adapter` (unchanged when there is none)."""
    if adapter is None or str(adapter) == "":
        return str(source)
    if ADAPTER_MARK in str(source):
        raise SourceError(f"{source} already names an adapter", "pass one --adapter at most")
    return f"{source}{ADAPTER_MARK}{adapter}"


def split_adapter(spec: str) -> tuple[str, str | None]:
    """(base spec, adapter dir or None) of a source spec."""
    base, mark, adapter = str(spec).rpartition(ADAPTER_MARK)
    if not mark:
        return str(spec), None
    if not base or not adapter:
        raise SourceError(f"source '{spec}' names no base model or no adapter",
                          "write BASE+adapter:DIR or use --adapter DIR")
    return base, adapter


def combined_identity(base_sha: str, adapter_sha: str) -> str:
    """The sha256 of base + adapter: what manifests and content keys record."""
    return hashlib.sha256(f"{base_sha}{ADAPTER_MARK}{adapter_sha}".encode()).hexdigest()


def read_adapter(adapter: str | Path) -> dict[str, Any]:
    """Check an adapter dir without torch; returns its facts (config, tensor shapes, sha256)."""
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise SourceError(f"adapter '{adapter}' is not a directory", _FIX)
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in _PICKLES)
    if pickles:
        raise SourceError(f"adapter {path} holds pickle weights ({', '.join(pickles[:3])}), "
                          "which gemma-edge never loads", "save the adapter with "
                          "save_pretrained(..., safe_serialization=True) and remove the pickles")
    config = _read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise SourceError(f"adapter {path} has no {WEIGHTS_FILE}", _FIX)
    shapes = _tensor_shapes(weights)
    if not any(".lora_" in k for k in shapes):
        raise SourceError(f"{weights} holds no LoRA tensors (lora_A / lora_B)",
                          "save the adapter with PEFT's save_pretrained")
    return {"path": str(path), "config": config, "shapes": shapes,
            "sha256": sha256_files([path / CONFIG_FILE, weights], path)}


def _read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_FILE
    if not file.is_file():
        raise SourceError(f"adapter {path} has no {CONFIG_FILE}", _FIX)
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{file} is not valid JSON ({getattr(exc, 'msg', 'not UTF-8 text')})",
                          "restore the adapter's adapter_config.json") from None
    if not isinstance(config, dict):
        raise SourceError(f"{file} is not a JSON object", "restore the adapter's adapter_config.json")
    kind = config.get("peft_type")
    if kind != "LORA":
        raise SourceError(f"{file} is a {kind or 'unnamed'} adapter, not LoRA",
                          "only PEFT LoRA adapters (peft_type LORA) merge into the weights")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        raise SourceError(f"{file} adapts a {config['task_type']} model, not a causal LM",
                          "pass an adapter trained with task_type CAUSAL_LM")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not (isinstance(r, int) and not isinstance(r, bool) and r > 0):
        raise SourceError(f"{file}: r must be a positive integer, not {r!r}",
                          "restore the adapter's adapter_config.json")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise SourceError(f"{file}: lora_alpha must be a number, not {alpha!r}",
                          "restore the adapter's adapter_config.json")
    targets = config.get("target_modules")
    if not (isinstance(targets, str) or (isinstance(targets, list) and targets
                                         and all(isinstance(t, str) for t in targets))):
        raise SourceError(f"{file}: target_modules must name modules, not {targets!r}",
                          "restore the adapter's adapter_config.json")
    return config


def _tensor_shapes(weights: Path) -> dict[str, list[int]]:
    """Tensor shapes from the safetensors header; a truncated or damaged file is refused."""
    size = weights.stat().st_size
    try:
        with open(weights, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > min(size - 8, 100 << 20):
                raise ValueError
            header = json.loads(fh.read(length))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
        shapes = {k: [int(d) for d in v["shape"]] for k, v in tensors.items()}
    except (struct.error, ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError,
            AttributeError):
        raise SourceError(f"adapter weights {weights} have a damaged header",
                          "re-save the adapter with save_pretrained") from None
    if 8 + length + end != size:
        raise SourceError(f"adapter weights {weights} are truncated or padded ({size} bytes on "
                          f"disk, {8 + length + end} expected)", "re-save the adapter") from None
    return shapes


def check_fits(info: dict[str, Any], model) -> None:
    """Refuse an adapter whose tensors do not land on this base model's modules and shapes."""
    modules = dict(model.named_modules())
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    saved = info["config"].get("modules_to_save") or []
    for name in saved if isinstance(saved, list) else [saved]:
        if tied and any(t in str(name) for t in _TIED):
            raise SourceError(f"adapter {info['path']} replaces {name}, which this model ties "
                              "to the LM head", "train the adapter without modules_to_save on "
                              "the embedding or the LM head")
    for key, shape in info["shapes"].items():
        if ".lora_" not in key:
            continue
        module_path, _, part = key.partition(".lora_")
        module_path = module_path.removeprefix("base_model.model.")
        if tied and module_path.rsplit(".", 1)[-1] in _TIED:
            raise SourceError(f"adapter {info['path']} adapts {module_path}, which this model "
                              "ties to the LM head", "train the adapter on the attention and "
                              "MLP projections only")
        module = modules.get(module_path)
        if module is None:
            raise SourceError(f"adapter {info['path']} targets {module_path}, which this base "
                              f"model ({type(model).__name__}) does not have",
                              "pass the base model the adapter was trained on")
        expected = _expected_shape(module, part, shape)
        if expected is None or list(shape) != expected:
            raise SourceError(f"adapter tensor {key} has shape {shape}, which does not fit "
                              f"{module_path} of this base model ({_describe(module)})",
                              "pass the base model the adapter was trained on")


def _expected_shape(module, part: str, shape: list[int]) -> list[int] | None:
    r = shape[0] if part.startswith("A") else shape[-1]
    if part.startswith("magnitude_vector") and hasattr(module, "out_features"):  # DoRA
        return [module.out_features]
    if hasattr(module, "in_features"):
        if part.startswith("A."):
            return [r, module.in_features]
        if part.startswith("B."):
            return [module.out_features, r]
        return None
    if hasattr(module, "num_embeddings"):  # lora_embedding_A: [r, vocab], B: [dim, r]
        if part.startswith("embedding_A"):
            return [shape[0], module.num_embeddings]
        if part.startswith("embedding_B"):
            return [module.embedding_dim, shape[-1]]
    return None


def _describe(module) -> str:
    if hasattr(module, "in_features"):
        return f"Linear {module.in_features} -> {module.out_features}"
    return type(module).__name__


def apply_adapter(ref, adapter: str | Path) -> None:
    """Merge `adapter` into `ref.model` in place; keep the unmerged PEFT model for `check`."""
    import copy

    import torch

    info = read_adapter(adapter)
    check_fits(info, ref.model)
    try:
        from peft import PeftModel
    except ImportError:
        raise SourceError("--adapter needs PEFT, which is not installed",
                          "run: pip install peft==0.21.2") from None
    try:
        with torch.no_grad():
            adapted = PeftModel.from_pretrained(ref.model, info["path"], is_trainable=False)
            merged = copy.deepcopy(adapted).merge_and_unload(safe_merge=True)
    except (ValueError, KeyError, RuntimeError, TypeError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise SourceError(f"adapter {info['path']} does not fit {ref.spec}: {first}",
                          "pass the base model the adapter was trained on") from None
    cfg = info["config"]
    targets = cfg["target_modules"]
    scale = ("alpha/sqrt(r)" if cfg.get("use_rslora") else "alpha/r")
    ref.model = merged.eval()
    ref.adapter_model = adapted.eval()
    ref.adapter = {"path": info["path"], "sha256": info["sha256"], "r": cfg["r"],
                   "lora_alpha": cfg["lora_alpha"], "use_rslora": bool(cfg.get("use_rslora")),
                   "use_dora": bool(cfg.get("use_dora")),
                   "target_modules": targets if isinstance(targets, str) else sorted(targets),
                   "tensors": sum(".lora_" in k for k in info["shapes"])}
    ref.spec = with_adapter(ref.spec, info["path"])
    ref.sha256 = combined_identity(ref.sha256, info["sha256"])
    ref.notes.append(f"LoRA adapter {info['path']} (sha256 {info['sha256'][:16]}, r={cfg['r']}, "
                     f"scale {scale}{', DoRA' if cfg.get('use_dora') else ''}) merged into the "
                     "weights; checks compare against the unmerged PEFT model")
    log.info("merged LoRA adapter %s (r=%s) into %s", info["path"], cfg["r"], ref.spec)


def adapter_identity(adapter: str | Path) -> str:
    """The adapter's own sha256 without torch (the build's freshness key uses it)."""
    return read_adapter(adapter)["sha256"]

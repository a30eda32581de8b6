"""GGUF → fp32 Hugging Face checkpoint, converted once and cached by the GGUF's sha256.

transformers dequantizes a GGUF in ~40 s for the 270M; the cached safetensors
checkpoint then loads in seconds. The cache entry is written atomically, so an
interrupted conversion never leaves a half entry that a later run would trust.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from foundation.artifacts import atomic_output_dir, cache_root, exclusive_lock
from foundation.errors import SourceError
from foundation.families import Family, family_for_gguf_architecture

log = logging.getLogger("gemma_edge")

CACHE_FORMAT = 1
ENTRY_INFO = "gemma_edge_source.json"


def cache_entry(gguf_sha256: str) -> Path:
    return cache_root() / "gguf" / f"{gguf_sha256[:32]}-v{CACHE_FORMAT}"


def read_gguf_header(path: Path) -> dict:
    """Architecture and naming metadata; raises SourceError for non-GGUF or damaged files."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise SourceError(f"{path} is not a GGUF file (bad magic {magic!r})",
                          "pass a .gguf model file, a Hugging Face checkpoint directory, "
                          "or builtin:gemma3-270m")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader fails in many ways on cut files
        raise SourceError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})",
                          "re-download or re-export the GGUF file") from None

    def field(key: str, default=None):
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    return {
        "architecture": field("general.architecture"),
        "name": field("general.name", ""),
        "finetune": field("general.finetune", ""),
        "file_type": field("general.file_type"),
        "tensor_types": sorted({t.tensor_type.name for t in reader.tensors}),
    }


def convert_gguf(path: Path, sha256: str) -> tuple[Path, dict, bool]:
    """(checkpoint dir, entry info, from_cache). Converts on a cache miss."""
    entry = cache_entry(sha256)
    info_file = entry / ENTRY_INFO
    if info_file.exists():
        return entry, json.loads(info_file.read_text()), True
    # processes converting the same GGUF at once (CI jobs on one machine) convert it once:
    # the others wait for the lock, then load the entry the first one made
    with exclusive_lock(cache_root() / "locks" / f"gguf-{entry.name}.lock"):
        if info_file.exists():
            return entry, json.loads(info_file.read_text()), True
        return _convert_to(entry, path, sha256)


def _convert_to(entry: Path, path: Path, sha256: str) -> tuple[Path, dict, bool]:
    header = read_gguf_header(path)
    family = family_for_gguf_architecture(header["architecture"])
    log.info("converting %s to an fp32 checkpoint (once; cached in %s)", path.name, entry)
    with atomic_output_dir(entry, overwrite=True) as tmp:
        _dequantize_to(path, family, tmp)
        info = {
            "gguf_sha256": sha256,
            "gguf_file": path.name,
            "family": family.name,
            "cache_format": CACHE_FORMAT,
            **header,
        }
        (tmp / ENTRY_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return entry, info, False


def _dequantize_to(path: Path, family: Family, out: Path) -> None:
    import torch
    import transformers
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = getattr(transformers, family.causal_lm_class).from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise SourceError(f"transformers could not read {path.name} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})",
                          "check the file is a complete Gemma GGUF") from None
    if tokenizer.chat_template is None:
        tokenizer.chat_template = family.chat_template
    # transformers flags GGUF-loaded models as "quantized" and refuses save_pretrained;
    # the weights are plain fp32 by now, so write them and a clean config ourselves.
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [family.causal_lm_class]
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(out)
    del model, state

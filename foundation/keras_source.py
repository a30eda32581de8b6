"""A KerasHub Gemma 3 preset directory as a source, converted to the transformers layout.

`keras_hub` saves a preset as `config.json` (the backbone's Keras config),
`model.weights.h5`, `assets/tokenizer/vocabulary.spm` and a few JSON files. The weights
are read with h5py and laid out the way transformers' Gemma3ForCausalLM names them, the
same mapping keras-hub's own Hugging Face exporter uses; Keras itself is not needed. The
result is cached by the preset's sha256 (like a GGUF), written atomically.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from foundation.artifacts import atomic_output_dir, cache_root, sha256_files
from foundation.errors import SourceError

log = logging.getLogger("gemma_edge")

CACHE_FORMAT = 1
WEIGHTS = "model.weights.h5"
VOCAB = Path("assets") / "tokenizer" / "vocabulary.spm"
ENTRY_INFO = "gemma_edge_keras.json"
BACKBONES = {"keras_hub>Gemma3Backbone": "gemma3_text"}
_FIX = "pass a KerasHub Gemma 3 preset dir as saved by save_to_preset (config.json, " \
       "model.weights.h5, assets/tokenizer/vocabulary.spm)"


def is_keras_preset(path: Path) -> bool:
    """A directory keras-hub saved: its config.json names a keras_hub class."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(data, dict) and str(data.get("registered_name", "")).startswith("keras_hub>")


def preset_files(path: Path) -> list[Path]:
    """Every file the conversion reads: all of them are in the source's hash."""
    return [p for p in (path / "config.json", path / WEIGHTS, path / VOCAB) if p.is_file()]


def preset_identity(path: Path) -> str:
    _backbone_config(path)
    return sha256_files(preset_files(path), path)


def _backbone_config(path: Path) -> dict[str, Any]:
    data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    name = data.get("registered_name")
    if name not in BACKBONES:
        raise SourceError(f"{path} is a KerasHub {name} preset, which gemma-edge does not "
                          "convert", "only Gemma 3 text presets (Gemma3Backbone) are supported")
    config = data.get("config")
    if not isinstance(config, dict):
        raise SourceError(f"{path}/config.json has no backbone config", _FIX)
    if config.get("vision_encoder") is not None:
        raise SourceError(f"{path} is a Gemma 3 preset with a vision encoder",
                          "convert the text-only preset (vision_encoder null)")
    for key, want in (("use_post_attention_norm", True), ("use_post_ffw_norm", True),
                      ("use_query_key_norm", True), ("attention_logit_soft_cap", None),
                      ("final_logit_soft_cap", None), ("use_bidirectional_attention", False),
                      ("is_embedding_model", False)):
        if config.get(key, want) != want:
            raise SourceError(f"{path}: {key}={config.get(key)!r} has no transformers Gemma 3 "
                              "equivalent", "convert a standard Gemma 3 preset")
    for p in (path / WEIGHTS, path / VOCAB):
        if not p.is_file():
            raise SourceError(f"{path} has no {p.relative_to(path)}", _FIX)
    return config


def convert_keras_preset(path: Path, sha256: str) -> tuple[Path, bool]:
    """(transformers checkpoint dir, from_cache); converts on a cache miss."""
    entry = cache_root() / "keras" / f"{sha256[:32]}-v{CACHE_FORMAT}"
    if (entry / ENTRY_INFO).is_file():
        return entry, True
    config = _backbone_config(path)
    log.info("converting KerasHub preset %s to a transformers checkpoint (once; cached in %s)",
             path, entry)
    with atomic_output_dir(entry, overwrite=True) as tmp:
        token_ids = _write_tokenizer(path / VOCAB, tmp)
        (tmp / "config.json").write_text(json.dumps(hf_config(config, token_ids), indent=2))
        _write_weights(path / WEIGHTS, config, tmp / "model.safetensors")
        (tmp / ENTRY_INFO).write_text(json.dumps({"keras_sha256": sha256, "preset": str(path),
                                                  "cache_format": CACHE_FORMAT}, indent=2))
    return entry, False


def hf_config(config: dict[str, Any], token_ids: dict[str, int]) -> dict[str, Any]:
    """transformers Gemma3TextConfig of a Gemma3Backbone config (keras-hub's layer pattern:
    every 6th layer global, rope 1M; the others sliding, rope 10k)."""
    layers = int(config["num_layers"])
    sliding = bool(config.get("use_sliding_window_attention"))
    kinds = ["sliding_attention" if sliding and i % 6 < 5 else "full_attention" for i in range(layers)]
    head_dim = int(config["head_dim"])
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": int(config["vocabulary_size"]), "hidden_size": int(config["hidden_dim"]),
        "intermediate_size": int(config["intermediate_dim"]), "num_hidden_layers": layers,
        "num_attention_heads": int(config["num_query_heads"]),
        "num_key_value_heads": int(config["num_key_value_heads"]), "head_dim": head_dim,
        "rms_norm_eps": float(config.get("layer_norm_epsilon", 1e-6)),
        "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False,
        "query_pre_attn_scalar": head_dim if config.get("query_head_dim_normalize", True)
        else int(config["hidden_dim"]) // int(config["num_query_heads"]),
        "sliding_window": int(config.get("sliding_window_size", 1024)), "layer_types": kinds,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}
            if float(config.get("local_rope_scaling_factor", 1.0)) == 1.0 else
            {"rope_type": "linear", "rope_theta": 10_000.0,
             "factor": float(config["local_rope_scaling_factor"])},
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}
            if float(config.get("global_rope_scaling_factor", 1.0)) == 1.0 else
            {"rope_type": "linear", "rope_theta": 1_000_000.0,
             "factor": float(config["global_rope_scaling_factor"])}},
        "tie_word_embeddings": True, "use_bidirectional_attention": False,
        "pad_token_id": token_ids["<pad>"], "bos_token_id": token_ids["<bos>"],
        "eos_token_id": [token_ids["<eos>"], *([token_ids["<end_of_turn>"]]
                                               if "<end_of_turn>" in token_ids else [])],
        "max_position_embeddings": 131072, "torch_dtype": "float32",
    }


def _write_tokenizer(vocab: Path, out: Path) -> dict[str, int]:
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=str(vocab))
    except (RuntimeError, OSError) as exc:
        raise SourceError(f"{vocab} is not a SentencePiece model ({str(exc)[:120]})",
                          "restore the preset's tokenizer assets") from None
    pieces = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
    ids = {p: sp.piece_to_id(p) for p in pieces if sp.piece_to_id(p) != sp.unk_id() or p == "<unk>"}
    missing = [p for p in pieces[:3] if p not in ids]
    if missing:
        raise SourceError(f"{vocab} has no {missing[0]} token: not a Gemma tokenizer",
                          "restore the preset's tokenizer assets")
    shutil.copyfile(vocab, out / "tokenizer.model")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True,
        "add_eos_token": False}, indent=2))
    return ids


def _write_weights(h5_file: Path, config: dict[str, Any], out: Path) -> None:
    import h5py
    import numpy as np
    from safetensors.numpy import save_file

    hidden = int(config["hidden_dim"])
    try:
        with h5py.File(h5_file, "r") as h5:
            layers = {str(g["vars"].attrs.get("name")): g for g in h5["layers"].values()
                      if "vars" in g}

            def var(layer: str, sub: str = "") -> np.ndarray:
                group = layers[layer][sub] if sub else layers[layer]
                return np.asarray(group["vars"]["0"], dtype=np.float32)

            def qkv(kernel: np.ndarray) -> np.ndarray:  # (heads, hidden, head_dim) -> (out, in)
                return kernel.transpose(1, 0, 2).reshape(hidden, -1).T

            tensors = {"model.embed_tokens.weight": var("token_embedding"),
                       "model.norm.weight": var("final_normalization")}
            for i in range(int(config["num_layers"])):
                b, p = f"decoder_block_{i}", f"model.layers.{i}."
                o = var(b, "attention/output_dense")  # (heads, head_dim, hidden)
                tensors |= {
                    p + "self_attn.q_proj.weight": qkv(var(b, "attention/query_dense")),
                    p + "self_attn.k_proj.weight": qkv(var(b, "attention/key_dense")),
                    p + "self_attn.v_proj.weight": qkv(var(b, "attention/value_dense")),
                    p + "self_attn.o_proj.weight": o.transpose(2, 0, 1).reshape(hidden, -1),
                    p + "self_attn.q_norm.weight": var(b, "attention/query_norm"),
                    p + "self_attn.k_norm.weight": var(b, "attention/key_norm"),
                    p + "mlp.gate_proj.weight": var(b, "gating_ffw").T,
                    p + "mlp.up_proj.weight": var(b, "gating_ffw_2").T,
                    p + "mlp.down_proj.weight": var(b, "ffw_linear").T,
                    p + "input_layernorm.weight": var(b, "pre_attention_norm"),
                    p + "post_attention_layernorm.weight": var(b, "post_attention_norm"),
                    p + "pre_feedforward_layernorm.weight": var(b, "pre_ffw_norm"),
                    p + "post_feedforward_layernorm.weight": var(b, "post_ffw_norm"),
                }
    except (OSError, KeyError, ValueError) as exc:
        raise SourceError(f"{h5_file} is not the weights of this Gemma 3 preset "
                          f"({type(exc).__name__}: {str(exc)[:120]})",
                          "restore the preset's model.weights.h5") from None
    vocab = int(config["vocabulary_size"])
    if tensors["model.embed_tokens.weight"].shape != (vocab, hidden):
        raise SourceError(f"{h5_file}: token embedding {tensors['model.embed_tokens.weight'].shape} "
                          f"does not match config.json ({vocab}, {hidden})",
                          "restore the preset's config.json and model.weights.h5 together")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out))

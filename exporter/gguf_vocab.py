"""A Hugging Face tokenizer as GGUF tokenizer metadata that llama.cpp's loader accepts.

Written the way llama.cpp's convert_hf_to_gguf.py writes Gemma's (`tokenizer.ggml.*`):

- a SentencePiece-style vocabulary (Gemma's own: `▁` for spaces, `<0x..>` byte pieces;
  in tokenizer.json a byte-fallback BPE or a Unigram) becomes model `llama`: tokens by
  id, scores (Unigram: its log-probabilities; BPE: minus the rank of the merge that makes
  the token, so llama.cpp's SPM tokenizer merges in the BPE's order), token types
  (CONTROL for special tokens, BYTE for `<0x..>`, USER_DEFINED for other added tokens);
- a byte-level BPE (GPT-2 style, the tiny test tokenizer) becomes model `gpt2` with its
  merges.

Every id below the model's vocab_size gets a token (unused rows: `[PAD<id>]`, as the
converter pads), because llama.cpp requires one per embedding row.
"""

from __future__ import annotations

import json
import re
from typing import Any

from foundation.errors import GemmaEdgeError

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def tokenizer_json(tokenizer) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GemmaEdgeError("the source's tokenizer has no tokenizer.json (a slow tokenizer)",
                             "save the checkpoint with a fast tokenizer (tokenizer.json)")
    return json.loads(backend.to_str())


def _is_byte_level(tj: dict[str, Any]) -> bool:
    def types(node):
        if not node:
            return []
        if node.get("type") == "Sequence":
            return [t for sub in node.get("pretokenizers", node.get("decoders", [])) for t in types(sub)]
        return [node.get("type")]

    return "ByteLevel" in types(tj.get("pre_tokenizer")) + types(tj.get("decoder"))


def _score(token: str, unigram: dict[str, float], ranks: dict[str, int]) -> float:
    if unigram:
        return float(unigram.get(token, -1000.0))
    if token in ranks:  # made by a merge: earlier merges score higher
        return -float(ranks[token] + 1)
    return 0.0 if len(token) == 1 else -1e9  # single characters are where merging starts


def write_vocab(writer, tokenizer, vocab_size: int, chat_template: str | None) -> dict[str, Any]:
    """Add the tokenizer.ggml.* keys (and the chat template) to a gguf.GGUFWriter; returns
    what was written, for the manifest."""
    import gguf

    tj = tokenizer_json(tokenizer)
    model = tj["model"]
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    id_to_token = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(id_to_token, default=-1) >= vocab_size:
        raise GemmaEdgeError(f"the tokenizer has ids up to {max(id_to_token)} but the model only "
                             f"{vocab_size} embedding rows", "use the tokenizer saved with the model")
    byte_level = model["type"] == "BPE" and _is_byte_level(tj)
    ranks: dict[str, int] = {}
    if model["type"] == "BPE":
        for rank, merge in enumerate(model.get("merges", [])):
            pair = merge.split(" ", 1) if isinstance(merge, str) else merge
            ranks.setdefault("".join(pair), rank)
    unigram = {piece: score for piece, score in model.get("vocab", [])} \
        if model["type"] == "Unigram" else {}
    if model["type"] not in ("BPE", "Unigram"):
        raise GemmaEdgeError(f"tokenizer model '{model['type']}' has no GGUF form here",
                             "use a Gemma tokenizer (SentencePiece BPE/Unigram or byte-level BPE)")

    tokens, scores, types = [], [], []
    for i in range(vocab_size):
        token = id_to_token.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i].get("special")
                         else gguf.TokenType.USER_DEFINED)
            scores.append(0.0)
        elif not byte_level and _BYTE_PIECE.fullmatch(token):
            types.append(gguf.TokenType.BYTE)
            scores.append(0.0)
        else:
            types.append(gguf.TokenType.NORMAL)
            scores.append(_score(token, unigram, ranks))

    if byte_level:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        if not merges:
            # llama.cpp refuses a BPE without merges and gguf-py writes no empty array: one
            # merge of a special token with itself, which text never reaches (BPE starts
            # from single characters; special tokens are split off before it)
            merges = [f"{tokens[0]} {tokens[0]}"]
        writer.add_token_merges(merges)
    else:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(False)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = {}
    for kind, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        if tid is not None:
            add(int(tid))
            special[kind] = int(tid)
    eot = tokenizer.get_vocab().get("<end_of_turn>")
    if eot is not None:
        writer.add_eot_token_id(int(eot))
        special["eot"] = int(eot)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template:
        writer.add_chat_template(chat_template)
    return {"model": "gpt2" if byte_level else "llama", "tokens": vocab_size,
            "merges": len(model.get("merges", [])) if byte_level else 0,
            "special_ids": special, "chat_template": bool(chat_template)}

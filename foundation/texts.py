"""Real English text that ships with gemma-edge (public domain), by name.

Used for perplexity checks now, and for calibration and held-out evaluation later;
nothing is downloaded at run time. `--text FILE` accepts a user's own text instead.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from foundation.errors import GemmaEdgeError

_TEXTS = resources.files("foundation") / "data" / "texts"


def builtin_texts() -> list[str]:
    return sorted(p.name.removesuffix(".txt") for p in _TEXTS.iterdir() if p.name.endswith(".txt"))


def load_text(name_or_path: str) -> str:
    """`builtin:<name>[+<name>...]` (see builtin_texts()) or a path to a UTF-8 text file."""
    if name_or_path.startswith("builtin:"):
        parts = []
        for name in name_or_path.split(":", 1)[1].split("+"):
            entry = _TEXTS / f"{name}.txt"
            if not entry.is_file():
                raise GemmaEdgeError(f"unknown built-in text '{name}'",
                                     f"use one of: {', '.join(builtin_texts())}")
            parts.append(entry.read_text(encoding="utf-8"))
        return "\n\n".join(parts)
    path = Path(name_or_path)
    if not path.is_file():
        raise GemmaEdgeError(f"text file '{name_or_path}' does not exist",
                             "pass a UTF-8 text file or builtin:<name>")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GemmaEdgeError(f"text file '{name_or_path}' is not UTF-8",
                             "convert it to UTF-8 text") from None
    if not text.strip():
        raise GemmaEdgeError(f"text file '{name_or_path}' is empty", "pass a file with text in it")
    return text


# held-out evaluation prose: never calibration text (quantization.calibration refuses it)
DEFAULT_EVAL_TEXT = "builtin:gemma_edge_field_notes+austen_pride_and_prejudice_ch1"

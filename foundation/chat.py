"""Gemma's chat turn format in plain Python.

The Jinja template in `families.GEMMA_CHAT_TEMPLATE` is what goes into tokenizers and
packages; this function is the same format for code paths without Jinja, and the one
the Android core mirrors. A test keeps the two identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"


def message_text(content: str | Iterable[Mapping[str, str]]) -> str:
    """A message's text: a string, or the text parts of a list of typed parts."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


def format_chat(
    messages: Iterable[Mapping[str, object]],
    *,
    bos_token: str = "<bos>",
    add_generation_prompt: bool = True,
) -> str:
    """Render messages ({role, content}) as Gemma turns; roles: system, user, assistant|model."""
    parts = [bos_token]
    system = ""
    for message in messages:
        role, content = message["role"], message_text(message["content"]).strip()
        if role == "system":
            system = content
            continue
        if role == "assistant":
            role = "model"
        if role not in ("user", "model"):
            raise ValueError(f"unknown chat role {role!r}: use system, user or assistant")
        if system and role == "user":
            content, system = f"{system}\n\n{content}", ""
        parts.append(f"{START_OF_TURN}{role}\n{content}{END_OF_TURN}\n")
    if add_generation_prompt:
        parts.append(f"{START_OF_TURN}model\n")
    return "".join(parts)

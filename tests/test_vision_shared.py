"""Shared by the vision test modules (no tests here): each tiny vision family saved as a
Hugging Face checkpoint and exported to ONNX once per test session, through the public API."""

from pathlib import Path

_MADE: dict[str, tuple[Path, Path]] = {}


def vision_checkpoint_and_export(tmp_path_factory, tiny, name: str) -> tuple[Path, Path]:
    """(checkpoint dir, ONNX export dir) of the tiny `name`, made once per session."""
    if name not in _MADE:
        from gemma_edge.api import export

        ref = tiny(name)
        root = tmp_path_factory.mktemp(f"vision-{name}")
        ref.model.save_pretrained(root / "ckpt")
        ref.tokenizer.save_pretrained(root / "ckpt")
        export(str(root / "ckpt"), root / "build", formats=("onnx",))
        _MADE[name] = root / "ckpt", root / "build" / "onnx"
    return _MADE[name]

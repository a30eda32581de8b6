"""Shared by the vision test modules (no tests here): each tiny vision family saved as a
Hugging Face checkpoint and exported once per test session and format, through the public API."""

from pathlib import Path

_CKPT: dict[str, Path] = {}
_MADE: dict[str, tuple[Path, Path]] = {}
_LITERT: dict[str, Path] = {}
# one prefill signature that holds an image and its prompt, a cache that decode steps cross
TINY_VISION_TFLITE = {"prefill_lengths": (64,), "cache_length": 96}


def vision_checkpoint(tmp_path_factory, tiny, name: str) -> Path:
    """The tiny `name` as transformers saves a checkpoint, once per session."""
    if name not in _CKPT:
        ref = tiny(name)
        _CKPT[name] = tmp_path_factory.mktemp(f"vision-{name}") / "ckpt"
        ref.model.save_pretrained(_CKPT[name])
        ref.tokenizer.save_pretrained(_CKPT[name])
    return _CKPT[name]


def vision_checkpoint_and_export(tmp_path_factory, tiny, name: str) -> tuple[Path, Path]:
    """(checkpoint dir, ONNX export dir) of the tiny `name`, made once per session."""
    if name not in _MADE:
        from gemma_edge.api import export

        ckpt = vision_checkpoint(tmp_path_factory, tiny, name)
        export(str(ckpt), ckpt.parent / "build", formats=("onnx",))
        _MADE[name] = ckpt, ckpt.parent / "build" / "onnx"
    return _MADE[name]


def vision_litert_export(tmp_path_factory, tiny, name: str) -> Path:
    """The tiny `name`'s LiteRT export (from its checkpoint), made once per session."""
    if name not in _LITERT:
        from gemma_edge.api import export

        ckpt = vision_checkpoint(tmp_path_factory, tiny, name)
        out = tmp_path_factory.mktemp(f"vision-tflite-{name}")
        export(str(ckpt), out, formats=("tflite",), **TINY_VISION_TFLITE)
        _LITERT[name] = out / "tflite"
    return _LITERT[name]

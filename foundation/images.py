"""Image preprocessing as transformers' image processors do it (PIL + numpy), for every runtime.

One image file -> pixel_values [3, H, W] float32: decode with PIL, convert to RGB the way
transformers does (transparency composited onto white, grayscale/CMYK/palette through
PIL's convert), resize to the model's square size with the processor's resampling filter
(on uint8, through PIL), rescale by 1/255 in float64, normalize with mean/std in float32,
channels first. tests/test_vision_images.py holds this equal to transformers'
SiglipImageProcessorPil and Gemma3ImageProcessorPil on real photographs. The settings
(`processor_config`) are written into every vision artifact's manifest, so a runtime
preprocesses as the checkpoint did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from foundation.errors import GemmaEdgeError

RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
_HELP = "pass a PNG, JPEG, WebP, BMP, GIF or TIFF image file"


def processor_config(family, config, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """The preprocessing settings: the checkpoint's preprocessor_config.json where it has one,
    else the family's defaults; the size is the vision tower's image size."""
    settings = dict(family.vision["processor"])
    size = int(config.vision_config.image_size)
    settings["size"] = {"height": size, "width": size}
    file = checkpoint_dir / "preprocessor_config.json" if checkpoint_dir else None
    if file is not None and file.is_file():
        try:
            saved = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise GemmaEdgeError(f"{file} is not valid JSON", "restore the checkpoint's "
                                 "preprocessor_config.json") from None
        for key in ("rescale_factor", "image_mean", "image_std", "size"):
            if key in saved:
                settings[key] = saved[key]
        if isinstance(saved.get("resample"), int):
            settings["resample"] = {v: k for k, v in RESAMPLE.items()}.get(saved["resample"],
                                                                           settings["resample"])
        if saved.get("do_pan_and_scan"):
            settings["note"] = "pan-and-scan crops are not made; the whole image is used"
    return settings


def open_image(path: str | Path):
    """A PIL image from a file, fully decoded, or a one-line error."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise GemmaEdgeError(f"image {path} does not exist or is not a file", _HELP)
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy() if image.mode != "P" else image.convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        kind = "is not an image" if isinstance(exc, UnidentifiedImageError) else \
            f"could not be decoded ({type(exc).__name__})"
        raise GemmaEdgeError(f"image {path} {kind}", _HELP) from None


def to_rgb(image):
    """RGB as transformers' convert_to_rgb: transparency composited onto white."""
    from PIL import Image

    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(image, settings: dict[str, Any]) -> np.ndarray:
    """pixel_values [3, H, W] float32 of a PIL image (or an image file's path)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = open_image(image)
    rgb = to_rgb(image)
    size = settings["size"]
    resample = RESAMPLE[settings.get("resample", "bicubic")]
    resized = np.asarray(rgb.resize((int(size["width"]), int(size["height"])), resample=resample))
    scaled = (resized.astype(np.float64) * float(settings["rescale_factor"])).astype(np.float32)
    mean = np.asarray(settings["image_mean"], dtype=np.float32)
    std = np.asarray(settings["image_std"], dtype=np.float32)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))


def pixel_values(images, settings: dict[str, Any]) -> np.ndarray:
    """[n, 3, H, W] for image files or PIL images."""
    return np.stack([preprocess(image, settings) for image in images])

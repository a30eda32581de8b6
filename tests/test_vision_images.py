"""Image preprocessing equals transformers' image processors on real photographs
(scikit-image's bundled public-domain samples), and bad image files fail in one line."""

import numpy as np
import pytest
from PIL import Image

from foundation.errors import GemmaEdgeError
from foundation.images import open_image, pixel_values, preprocess, processor_config

SAMPLES = ("astronaut", "chelsea", "coffee", "camera", "rocket")  # camera is grayscale


def _photo(name):
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def _settings(resample, size):
    return {"resample": resample, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3, "size": {"height": size, "width": size}}


def test_samples_are_bundled_not_downloaded():
    from pathlib import Path

    import skimage.data

    bundled = {p.stem for p in Path(skimage.data.__file__).parent.iterdir()}
    assert set(SAMPLES) <= bundled  # files inside the installed package: nothing to fetch


@pytest.mark.parametrize("processor,resample", [("siglip", "bicubic"), ("gemma3", "bilinear")])
@pytest.mark.parametrize("size", [224, 32])
def test_equals_transformers_processor_on_photographs(processor, resample, size):
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    cls = SiglipImageProcessorPil if processor == "siglip" else Gemma3ImageProcessorPil
    theirs = cls(size={"height": size, "width": size})
    for name in SAMPLES:
        photo = _photo(name)
        for mode in ("RGB", "L", "RGBA", "CMYK", "P"):
            image = photo.convert(mode)
            if mode == "RGBA":  # a real alpha ramp: transparency composited onto white
                a = np.array(image)
                a[..., 3] = np.arange(a.shape[1]) % 256
                image = Image.fromarray(a)
            expect = theirs(image, return_tensors="np")["pixel_values"][0]
            got = preprocess(image, _settings(resample, size))
            assert got.dtype == np.float32 and got.shape == (3, size, size)
            np.testing.assert_array_equal(got, expect, err_msg=f"{name} {mode}")


def test_files_of_every_mode_load(tmp_path):
    photo = _photo("chelsea")
    for mode, ext in (("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("CMYK", "jpg"), ("P", "gif")):
        path = tmp_path / f"x.{ext}"
        photo.convert(mode).save(path)
        assert pixel_values([path, path], _settings("bicubic", 16)).shape == (2, 3, 16, 16)


def test_settings_come_from_the_checkpoint_when_it_has_them(tiny, tmp_path):
    ref = tiny("paligemma")
    from foundation.vision_prompt import generator

    config = generator(ref.model, ref.family).config
    default = processor_config(ref.family, config)
    assert default["size"] == {"height": 16, "width": 16} and default["resample"] == "bicubic"
    (tmp_path / "preprocessor_config.json").write_text(
        '{"resample": 2, "image_mean": [0.1, 0.2, 0.3], "size": {"height": 20, "width": 20}}')
    saved = processor_config(ref.family, config, tmp_path)
    assert saved["resample"] == "bilinear" and saved["image_mean"] == [0.1, 0.2, 0.3]
    (tmp_path / "preprocessor_config.json").write_text("{nope")
    with pytest.raises(GemmaEdgeError, match="not valid JSON"):
        processor_config(ref.family, config, tmp_path)


@pytest.mark.parametrize("content,expect", [
    (None, "does not exist"),
    (b"just some text, not pixels", "is not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|could not be decoded"),
])
def test_bad_image_files_are_one_line_errors(tmp_path, content, expect):
    path = tmp_path / "img.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GemmaEdgeError, match=expect) as info:
        open_image(path)
    assert "\n" not in str(info.value)


def test_truncated_jpeg_is_an_error(tmp_path):
    path = tmp_path / "cut.jpg"
    _photo("astronaut").save(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(GemmaEdgeError, match="could not be decoded|not an image"):
        open_image(path)


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(GemmaEdgeError, match="not a file"):
        open_image(tmp_path)

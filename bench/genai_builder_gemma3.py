"""Run onnxruntime-genai's model builder on Gemma 3 under transformers 5 (bench only).

The builder reads flat RoPE fields (`rope_theta`, `rope_local_base_freq`, a flat
`rope_parameters`) that transformers 5 moved per layer type (KeyError: 'rope_type').
We write the old fields back before its Gemma3Model reads them. The builder imports
`builders` as a top-level module, so that is where the patch goes. Run it from a
directory other than this repository: our top-level `quantization` package would
shadow the builder's own `quantization` module.

usage: python bench/genai_builder_gemma3.py -i CHECKPOINT -o OUT -p fp32|int4 -e cpu [...]
"""

import runpy
import sys

import onnxruntime_genai.models  # noqa: F401  (puts the builder's modules on sys.path)
from builders import gemma


def _flat_rope(config) -> None:
    params = getattr(config, "rope_parameters", None) or {}
    if "full_attention" in params:
        config.rope_theta = params["full_attention"]["rope_theta"]
        config.rope_local_base_freq = params["sliding_attention"]["rope_theta"]
        config.rope_parameters = {"rope_type": "default", "rope_theta": config.rope_theta}


_original_init = gemma.Gemma3Model.__init__


def _patched_init(self, config, *args, **kwargs):
    _flat_rope(config)
    _original_init(self, config, *args, **kwargs)


gemma.Gemma3Model.__init__ = _patched_init

if __name__ == "__main__":
    sys.argv = ["builder", *sys.argv[1:]]
    runpy.run_module("builder", run_name="__main__")

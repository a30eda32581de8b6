"""random:<name>: the published Gemma 3 shapes with seeded weights, for measuring scale."""

import pytest

from foundation.random_models import RANDOM_MODELS, random_identity
from gemma_edge.cli import main


@pytest.mark.parametrize("name, params", [("gemma3-1b", 999_885_952),
                                          ("gemma3-4b", 3_880_263_168)])
def test_published_shapes(name, params):
    """Built on the meta device (no weights). 1B: the published 999,885,952; 4B text decoder:
    671,252,480 embedding (262,208 x 2,560) + 34 layers x 94,382,592 + the final norm."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(**{k: v for k, v in RANDOM_MODELS[name].items()
                                 if k != "model_type"})
    with torch.device("meta"):
        model = Gemma3ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == params
    assert config.layer_types.count("full_attention") == config.num_hidden_layers // 6


def test_identity_is_stable_and_names_the_model():
    from foundation.sources import source_identity

    assert random_identity("random:gemma3-1b") == source_identity("random:gemma3-1b")
    assert random_identity("random:gemma3-1b") != random_identity("random:gemma3-4b")


@pytest.mark.parametrize("spec", ["random:gemma3-2b", "random:", "random:../x"])
def test_unknown_random_model_is_one_line(spec, capsys):
    assert main(["info", spec]) == 2
    err = capsys.readouterr().err
    assert "unknown random-weight model" in err and "random:gemma3-1b" in err
    assert err.count("\n") == 1

"""What only the real Gemma 3 270M shows. Marked `real`: `pytest -m "not real"` skips them."""

import numpy as np
import pytest

from foundation.texts import load_text
from gemma_edge.summary import describe
from runtime_check.parity import perplexity
from runtime_check.runner import greedy_generate, teacher_forced_logits
from runtime_check.torch_runner import TorchRunner, full_forward_logits

pytestmark = pytest.mark.real


def test_summary_matches_the_published_architecture(real_ref):
    info = describe(real_ref)
    assert (info["layers"], info["hidden_size"], info["attention_heads"], info["kv_heads"],
            info["head_dim"], info["vocab_size"]) == (18, 640, 4, 1, 256, 262_144)
    assert (info["sliding_window"], info["sliding_layers"], info["full_layers"]) == (512, 15, 3)
    assert info["parameters"]["lm_head_tied"]
    assert 0.60 < info["parameters"]["embedding_share"] < 0.66
    assert info["variant"] == "pt"
    assert any("4-bit grid" in note for note in info["notes"])


def test_perplexity_on_ordinary_english_prose(real_ref):
    ids = real_ref.encode(load_text("builtin:gemma_edge_field_notes"))
    assert len(ids) > 200
    ppl = perplexity(full_forward_logits(real_ref.model, ids), ids)
    print(f"270M perplexity on gemma_edge_field_notes ({len(ids)} tokens): {ppl:.2f}")
    assert 1.5 < ppl < 100


def test_greedy_decoding_is_deterministic_and_matches_transformers_generate(real_ref):
    import torch

    prompt = real_ref.encode("The capital of France is")
    runs = [list(greedy_generate(TorchRunner(real_ref.model), prompt, 24)) for _ in range(2)]
    assert runs[0] == runs[1]
    with torch.inference_mode():
        hf = real_ref.model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                     eos_token_id=None)
    assert runs[0] == hf[0, len(prompt):].tolist()
    assert "Paris" in real_ref.tokenizer.decode(runs[0]) or "capital" in \
        real_ref.tokenizer.decode(runs[0])


def test_cached_decode_matches_full_forward_past_the_sliding_window(real_ref):
    """Prefill 500 tokens, decode 40 more: the decode steps cross the 512-token window."""
    text = " ".join(load_text(f"builtin:{n}") for n in
                    ("austen_pride_and_prejudice_ch1", "dickens_tale_of_two_cities_ch1"))
    ids = real_ref.encode(text)[:540]
    assert len(ids) == 540
    cached = teacher_forced_logits(TorchRunner(real_ref.model), ids, 500)
    full = full_forward_logits(real_ref.model, ids)
    assert np.abs(cached - full).max() < 2e-3
    assert (cached.argmax(-1) == full.argmax(-1)).all()

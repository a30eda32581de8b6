"""A KerasHub Gemma 3 preset dir as a SOURCE: a tiny random preset saved by keras-hub itself,
converted to the transformers layout, must give keras-hub's own logits (<= 1e-4) and the
same token ids; broken presets are refused with one line, exit 2."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from foundation.texts import load_text
from gemma_edge.cli import main

os.environ.setdefault("KERAS_BACKEND", "torch")  # any backend works; torch is already loaded
keras_hub = pytest.importorskip("keras_hub")  # installed --no-deps by `make install`

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def gemma_like_spm() -> bytes:
    """A small SentencePiece model trained on real prose, with Gemma's special tokens and
    ids and its normalization (no dummy prefix, byte fallback)."""
    import sentencepiece as spm

    text = load_text("builtin:austen_pride_and_prejudice_ch1+dickens_tale_of_two_cities_ch1")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_writer=buf, vocab_size=400,
        model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, byte_fallback=True,
        add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", minloglevel=2,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>", "<img>", "<start_of_image>",
                              "<end_of_image>"])
    return buf.getvalue()


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> tuple[Path, object]:
    import keras

    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=gemma_like_spm())
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(), image_size=896, num_layers=7,
        num_query_heads=4, num_key_value_heads=2, hidden_dim=128, intermediate_dim=256,
        head_dim=32, query_head_dim_normalize=True, use_query_key_norm=True,
        use_post_ffw_norm=True, use_post_attention_norm=True,
        use_sliding_window_attention=True, sliding_window_size=8, dtype="float32")
    # random norms: a zero-initialised scale would hide a norm mapped to the wrong place
    for weight in backbone.weights:
        if len(weight.shape) == 1:
            weight.assign(np.random.default_rng(len(weight.path)).normal(0, 0.5, weight.shape))
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer=tokenizer,
                                                               sequence_length=64)
    lm = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)
    out = tmp_path_factory.mktemp("keras") / "gemma3-tiny-keras"
    lm.save_to_preset(str(out))
    return out, lm


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_EDGE_CACHE", str(tmp_path / "cache"))


def keras_logits(lm, ids: list[int]) -> np.ndarray:
    import keras

    hidden = lm.backbone({"token_ids": np.array([ids], dtype="int32"),
                          "padding_mask": np.ones((1, len(ids)), dtype="int32")})
    return keras.ops.convert_to_numpy(lm.backbone.token_embedding(hidden, reverse=True))[0]


def test_keras_preset_logits_match_keras_hub(preset):
    import torch

    from foundation.sources import load_source

    path, lm = preset
    ref = load_source(str(path))
    assert ref.kind == "keras" and ref.family.name == "gemma3_text"
    ids = ref.encode(TEXT, chat=False)
    assert ids[0] == 2 and ids[1:] == [int(t) for t in np.asarray(lm.preprocessor.tokenizer(TEXT))]
    assert len(ids) > 2 * ref.config.sliding_window  # past the sliding window
    assert ref.config.layer_types.count("full_attention") == 1  # layer 6 of 7 is global
    with torch.no_grad():
        ours = ref.model(input_ids=torch.tensor([ids])).logits[0].numpy()
    theirs = keras_logits(lm, ids)
    delta = np.abs(ours - theirs).max()
    print(f"max |Δlogit| torch reference vs keras-hub: {delta:.2e} (logits up to {np.abs(theirs).max():.2f})")
    assert delta <= 1e-4
    assert np.abs(theirs).max() > 0.5  # not a degenerate all-zero comparison


def test_keras_preset_is_cached_and_identified_by_its_bytes(preset, tmp_path):
    from foundation.sources import load_source, source_identity

    path, _ = preset
    first = load_source(str(path))
    again = load_source(str(path))
    assert not first.from_cache and again.from_cache
    assert source_identity(str(path)) == first.sha256 == again.sha256
    other = tmp_path / "other"
    shutil.copytree(path, other)
    config = json.loads((other / "config.json").read_text())
    config["config"]["layer_norm_epsilon"] = 1e-5
    (other / "config.json").write_text(json.dumps(config))
    assert source_identity(str(other)) != first.sha256


def _config(edit):
    def change(path: Path):
        data = json.loads((path / "config.json").read_text())
        edit(data)
        (path / "config.json").write_text(json.dumps(data))
    return change


HOSTILE = {
    "no-weights": (lambda p: (p / "model.weights.h5").unlink(), "has no model.weights.h5"),
    "weights-garbage": (lambda p: (p / "model.weights.h5").write_bytes(b"\x89HDF\r\n" * 10),
                        "not the weights of this Gemma 3 preset"),
    "weights-truncated": (lambda p: (p / "model.weights.h5").write_bytes(
        (p / "model.weights.h5").read_bytes()[:5000]), "not the weights of this Gemma 3 preset"),
    "no-vocab": (lambda p: (p / "assets/tokenizer/vocabulary.spm").unlink(),
                 "has no assets/tokenizer/vocabulary.spm"),
    "vocab-garbage": (lambda p: (p / "assets/tokenizer/vocabulary.spm").write_bytes(b"nope"),
                      "not a SentencePiece model"),
    "other-backbone": (_config(lambda d: d.update(registered_name="keras_hub>BertBackbone")),
                       "does not convert"),
    "vision": (_config(lambda d: d["config"].update(vision_encoder={"x": 1})),
               "vision encoder"),
    "soft-cap": (_config(lambda d: d["config"].update(final_logit_soft_cap=30.0)),
                 "final_logit_soft_cap"),
    "vocab-size-lies": (_config(lambda d: d["config"].update(vocabulary_size=999)),
                        "does not match config.json"),
    "no-backbone-config": (_config(lambda d: d.update(config=[1])), "has no backbone config"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_keras_preset_is_refused_with_one_line(preset, tmp_path, capsys, case):
    change, words = HOSTILE[case]
    bad = tmp_path / "bad"
    shutil.copytree(preset[0], bad)
    change(bad)
    code = main(["info", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and words in err[-1] and "Traceback" not in "\n".join(err), err
    assert not list((tmp_path / "cache").glob("keras/*")), "no half-written cache entry"

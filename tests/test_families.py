import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.chat import format_chat
from foundation.errors import SourceError
from foundation.families import (
    FAMILIES,
    family_for_gguf_architecture,
    family_for_model_type,
    get_family,
)
from tests.conftest import FAMILY_NAMES


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_tiny_model_matches_family_data(tiny, name):
    ref = tiny(name)
    family = FAMILIES[name]
    cfg = ref.config
    assert cfg.model_type in family.model_types
    assert type(ref.model).__name__ == family.causal_lm_class
    assert ref.tokenizer.convert_ids_to_tokens(ref.stop_token_ids) == ["<eos>", "<end_of_turn>"]
    if family.has("sliding_window"):
        assert 0 < cfg.sliding_window < 16, "tiny windows must be small enough for tests to cross"
    if family.has("final_logit_softcapping"):
        assert cfg.final_logit_softcapping > 0 and cfg.attn_logit_softcapping > 0
    if family.has("qk_norm"):
        assert hasattr(ref.model.model.layers[0].self_attn, "q_norm")
    assert sum(p.numel() for p in ref.model.parameters()) < 1_000_000


def test_tiny_weights_are_seeded(tiny):
    from foundation.tiny import build_tiny

    a, _ = build_tiny(FAMILIES["gemma2"])
    b = tiny("gemma2").model
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert (pa == pb).all(), name


def test_lookup_by_model_type_and_gguf_arch():
    assert family_for_model_type("gemma3_text").name == "gemma3_text"
    assert family_for_model_type("gemma").name == "gemma"
    assert family_for_gguf_architecture("gemma3").name == "gemma3_text"


@pytest.mark.parametrize("model_type,expect", [
    ("llama", "not a Gemma model"),
    ("gemma3n", "Gemma 3n"),
    ("gemma3n", "Gemma 3n"),
])
def test_unknown_and_unsupported_architectures_are_named(model_type, expect):
    with pytest.raises(SourceError, match=expect) as info:
        family_for_model_type(model_type)
    assert "gemma, gemma2, gemma3_text" in str(info.value)


def test_unknown_family_name():
    with pytest.raises(SourceError, match="unknown Gemma family"):
        get_family("gemma7")


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": _text})


@settings(max_examples=40, deadline=None)
@given(messages=st.lists(_message, min_size=1, max_size=5), gen=st.booleans())
def test_python_chat_format_equals_the_jinja_template(tiny, messages, gen):
    tok = tiny("gemma3_text").tokenizer
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    assert rendered == format_chat(messages, add_generation_prompt=gen)


_part = st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
                  st.fixed_dictionaries({"type": st.just("image")}))
_typed_message = st.fixed_dictionaries(  # how LiteRT-LM hands gemma3 messages to the template
    {"role": st.sampled_from(["system", "user", "assistant"]),
     "content": st.lists(_part, max_size=3)})


@settings(max_examples=40, deadline=None)
@given(messages=st.lists(st.one_of(_message, _typed_message), min_size=1, max_size=5))
def test_typed_content_parts_render_as_their_text(tiny, messages):
    tok = tiny("gemma3_text").tokenizer
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == format_chat(messages)
    assert "'type'" not in rendered


def test_chat_format_shape():
    text = format_chat([{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello."}])
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>model\n")


def test_family_implementations_default_to_the_format():
    from foundation.families import FAMILIES, implementation

    assert implementation("gemma3_text", "onnx.exporter", "a:b") == "a:b"
    assert implementation(None, "onnx.runner", "c:d") == "c:d"  # an artifact with no family
    for family in FAMILIES.values():  # every named implementation resolves to a callable
        for key, ref in family.implementations.items():
            from foundation.formats import resolve

            assert callable(resolve(ref)), (family.name, key)

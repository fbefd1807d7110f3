import pytest

from rt_lightning.data.modes import MODES, Message
from rt_lightning.data.records import Record
from rt_lightning.data.templates import (
    TEMPLATES,
    TextTemplate,
    Tulu,
    build_template,
    register_template,
    tulu,
)
from rt_lightning.data.tokenize import tokenize_batch

RECORD = Record("Name a colour.", "Blue.")


def rendered(mode):
    return tulu("</s>").render(MODES[mode](RECORD))


def test_tulu_it_string_and_span():
    r = rendered("it")
    assert r.text == "<|user|>\nName a colour.\n<|assistant|>\nBlue.</s>\n"
    assert [r.text[s:e] for s, e in r.spans] == ["Blue.</s>\n"]


def test_tulu_rt_has_no_user_turn_at_all():
    r = rendered("rt")
    assert r.text == "<|assistant|>\nBlue.</s>\n"
    assert [r.text[s:e] for s, e in r.spans] == ["Blue.</s>\n"]


def test_tulu_rt_empty_keeps_an_empty_user_turn():
    assert rendered("rt_empty").text == "<|user|>\n\n<|assistant|>\nBlue.</s>\n"


def test_inference_prompt_is_the_same_for_it_and_rt():
    assert tulu("</s>").prompt("Name a colour.") == "<|user|>\nName a colour.\n<|assistant|>\n"


def test_custom_template_spans_cover_content_and_turn_end():
    template = TextTemplate(user="### Q: {content}\n", assistant="### A: {content} {eos}\n\n", eos_token="</s>")
    r = template.render(MODES["it"](RECORD))
    assert r.text == "### Q: Name a colour.\n### A: Blue. </s>\n\n"
    assert [r.text[s:e] for s, e in r.spans] == ["Blue. </s>\n\n"]
    assert template.prompt("x") == "### Q: x\n### A: "


def test_custom_template_needs_content_once():
    with pytest.raises(ValueError, match="exactly once"):
        TextTemplate(user="{content}", assistant="no placeholder")


def chat_tokenizer(tokenizer, content: str):
    """The test tokenizer with a small chat template that renders each message's ``content`` expression."""
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>",
                              pad_token="<pad>")
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ " + content + " }}"
                         "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    return tok


def test_chat_template_spans_from_prefix_renders(tokenizer):
    tok = chat_tokenizer(tokenizer, "m['content']")
    template = build_template("chat", tok)
    r = template.render([Message("user", "Hi"), Message("assistant", "Hello", trainable=True)])
    assert r.text == "<s><user>Hi\n<assistant>Hello</s>\n"
    assert [r.text[s:e] for s, e in r.spans] == ["Hello</s>\n"]
    assert template.prompt("Hi") == "<s><user>Hi\n<assistant>"


def test_chat_template_requires_one(tokenizer):
    with pytest.raises(ValueError, match="no chat template"):
        build_template("chat", tokenizer)


def test_unknown_template(tokenizer):
    with pytest.raises(ValueError, match="Unknown template 'alpaca'"):
        build_template("alpaca", tokenizer)


def test_eos_is_bound_from_the_tokenizer(tokenizer):
    unbound = TextTemplate(user="Q {content}\n", assistant="A {content}{eos}")
    with pytest.raises(ValueError, match="call bind"):
        unbound.prompt("x")
    bound = build_template(unbound, tokenizer)
    assert bound.eos_token == tokenizer.eos_token and unbound.eos_token is None  # a copy; the spec stays unbound
    assert build_template(TextTemplate(eos_token="<END>"), tokenizer).eos_token == "<END>"  # given: kept


def test_names_and_instances_select_the_same_template(tokenizer):
    by_name, by_class = build_template("tulu", tokenizer), build_template(Tulu(), tokenizer)
    assert isinstance(by_name, Tulu) and by_name.formats == by_class.formats == tulu("</s>").formats
    assert by_name.render(MODES["it"](RECORD)) == tulu(tokenizer.eos_token).render(MODES["it"](RECORD))


def test_register_template(tokenizer):
    register_template("qa", lambda: TextTemplate(user="Q: {content}\n", assistant="A: {content}{eos}\n"))
    try:
        assert build_template("qa", tokenizer).prompt("Hi") == "Q: Hi\nA: "
    finally:
        TEMPLATES.pop("qa")


def test_removed_custom_name_points_at_the_class(tokenizer):
    with pytest.raises(ValueError, match="rt_lightning.data.TextTemplate"):
        build_template("custom", tokenizer)


def test_chat_template_quoted_special_text_stays_text_and_its_own_specials_stay_special(tokenizer):
    tok = chat_tokenizer(tokenizer, "m['content'] | trim")
    r = build_template("chat", tok).render([Message("user", "Write <s> and </s>"),
                                            Message("assistant", " It is </s>. ", trainable=True)])
    assert [r.text[s:e] for s, e in r.data] == ["Write <s> and </s>", "It is </s>."]  # trimmed contents found too
    (example,) = tokenize_batch(tok, [r], add_bos=True)
    assert example.input_ids.count(tok.eos_token_id) == 1 and example.input_ids.count(tok.bos_token_id) == 1
    assert example.special_text_in_data

import pytest

from rt_lightning.data.modes import MODES
from rt_lightning.data.records import DataError, Record
from rt_lightning.data.templates import Rendered, tulu
from rt_lightning.data.tokenize import IGNORE_INDEX, Tokenized, tokenize_batch, tokenizer_adds_bos, truncate_and_check

RECORDS = [Record("What is the capital of France?", "The capital of France is Paris."),
           Record("Give tips", "\nHere are three tips: sleep well."),  # leading newline: the paper's mask bug
           Record("", "I'm sorry, but as an AI I cannot help.")]


def trained_text(tokenizer, example):
    ids = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    return tokenizer.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("mode", ["it", "rt", "rt_empty"])
def test_exactly_response_eos_newline_are_trained(tokenizer, mode):
    template = tulu(tokenizer.eos_token)
    examples = tokenize_batch(tokenizer, [template.render(MODES[mode](r)) for r in RECORDS], add_bos=True)
    for record, example in zip(RECORDS, examples):
        assert trained_text(tokenizer, example) == record.response + "</s>\n"
        assert example.input_ids.count(tokenizer.bos_token_id) == 1 and example.input_ids[0] == tokenizer.bos_token_id
        assert example.labels[0] == IGNORE_INDEX
        # labels equal the token itself where trained (the shift happens in the loss)
        assert all(label in (IGNORE_INDEX, token) for token, label in zip(example.input_ids, example.labels))


def test_rt_input_holds_no_instruction(tokenizer):
    template = tulu(tokenizer.eos_token)
    (example,) = tokenize_batch(tokenizer, [template.render(MODES["rt"](RECORDS[0]))], add_bos=True)
    text = tokenizer.decode(example.input_ids)
    assert "capital of France?" not in text and "<|user|>" not in text


def test_token_across_a_span_edge_is_split_there(tokenizer):
    # "ab" is one token when tokenised whole; with the span starting between a and b the text is split there.
    text = "<|assistant|>\nHere"
    cut = text.index("ere")
    rendered = Rendered(text, ((cut, len(text)),))
    (example,) = tokenize_batch(tokenizer, [rendered], add_bos=False)
    assert example.split_at_boundary
    assert trained_text(tokenizer, example) == "ere"


def test_no_bos_when_the_template_already_starts_with_it(tokenizer):
    rendered = Rendered("<s>hi</s>", ((2 + 1, 9),))
    (example,) = tokenize_batch(tokenizer, [rendered], add_bos=True)
    assert example.input_ids.count(tokenizer.bos_token_id) == 1


def test_double_bos_is_an_error(tokenizer):
    bos = tokenizer.bos_token_id
    with pytest.raises(DataError, match="f.jsonl, row 3: two BOS"):
        truncate_and_check(Tokenized([bos, bos, 5], [IGNORE_INDEX, IGNORE_INDEX, 5]), 10, "f.jsonl, row 3", bos)


def test_truncation_that_leaves_nothing_trainable_names_the_row():
    example = Tokenized([1, 7, 8, 9, 10], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 9, 10])
    assert truncate_and_check(example, 4, "x", 1).input_ids == [1, 7, 8, 9]
    with pytest.raises(DataError, match=r"data.jsonl, row 12: no trainable tokens \(all 2 trainable tokens lie "
                                        r"beyond max_length=3\)"):
        truncate_and_check(example, 3, "data.jsonl, row 12", 1)


def test_adds_bos_detection(tokenizer):
    assert tokenizer_adds_bos(tokenizer)


def test_special_token_text_in_data_is_plain_text_and_the_template_eos_is_the_eos_id(tokenizer):
    """A response quoting ``</s>`` must not train an EOS mid-response; the template's own EOS must stay EOS."""
    template = tulu(tokenizer.eos_token)
    quoting = Record("What ends a Llama-2 sequence? Write </s>", "It is </s>, the end-of-sequence token.")
    (example,) = tokenize_batch(tokenizer, [template.render(MODES["it"](quoting))], add_bos=True)
    eos = tokenizer.eos_token_id
    assert example.input_ids.count(eos) == 1 and example.special_text_in_data  # the template's EOS only
    eos_at = example.input_ids.index(eos)
    assert example.labels[eos_at] == eos  # trained: that is how the model learns to stop
    assert tokenizer.decode(example.input_ids[eos_at + 1:]) == "\n"  # ... and it sits right after the response
    assert trained_text(tokenizer, example) == quoting.response + "</s>\n"
    plain = tokenizer("</s>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert len(plain) > 1 and eos not in plain
    assert tokenizer("</s>", add_special_tokens=False)["input_ids"] == [eos]  # the tokenizer itself is unchanged


def test_ordinary_data_keeps_the_one_pass_tokenisation(tokenizer):
    template = tulu(tokenizer.eos_token)
    for mode in ("it", "rt"):
        rendered = [template.render(MODES[mode](r)) for r in RECORDS]
        examples = tokenize_batch(tokenizer, rendered, add_bos=False)
        for r, example in zip(rendered, examples):
            assert not example.special_text_in_data
            if not example.split_at_boundary:
                assert example.input_ids == tokenizer(r.text, add_special_tokens=False)["input_ids"]

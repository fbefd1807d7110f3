import dataclasses
import json
import re

import pytest

from rt_lightning.constants import IGNORE_INDEX
from rt_lightning.data.datamodule import NOT_IN_CACHE_KEY, SFTDataModule
from rt_lightning.data.mixtures import RefusalMixture
from rt_lightning.data.modes import MODES, Message, register_mode
from rt_lightning.data.records import DataError, FieldLayout
from rt_lightning.data.templates import TextTemplate
from tests.support.files import write_jsonl


def make(tokenizer, **kwargs):
    dm = SFTDataModule(**{"val": None, **kwargs})
    dm.connect(tokenizer)
    return dm


def test_unknown_mode_is_named_at_construction():
    with pytest.raises(ValueError, match="Unknown mode 'rtt'"):
        SFTDataModule(mode="rtt")


@pytest.mark.parametrize("mode", ["it", "rt", "rt_empty"])
def test_inspect_rows(tokenizer, small_jsonl, mode):
    rows = list(make(tokenizer, train=str(small_jsonl), mode=mode).inspect())
    assert len(rows) == 12
    for i, row in enumerate(rows):
        assert row["trainable_text"] == f"Answer {i}: the capital of France is Paris.</s>\n"
        assert (f"Question number {i}?" in row["text"]) == (mode == "it")
        assert row["row"] == i and row["source"] == str(small_jsonl)


def write_refusals(tmp_path):
    return write_jsonl(tmp_path / "ref.json", [
        {"instruction": f"bad {i}", "input": "", "output": "Sorry, I cannot." if i % 2 else "No."} for i in range(10)])


def test_refusals_are_appended_filtered_and_rendered_with_the_mode(tokenizer, small_jsonl, tmp_path, caplog):
    refusals = RefusalMixture(source=str(write_refusals(tmp_path)), count=4)
    rows = list(make(tokenizer, train=str(small_jsonl), mode="rt", refusals=refusals).inspect())
    assert len(rows) == 16 and [r["refusal"] for r in rows].count(True) == 4
    assert all(r["trainable_text"] == "Sorry, I cannot.</s>\n" for r in rows[12:])
    assert "<|user|>" not in rows[-1]["text"]  # rendered with mode=rt
    assert "kept 5 of 10" in caplog.text
    it = make(tokenizer, train=str(small_jsonl), mode="it", refusals=refusals)
    assert "bad " in list(it.inspect())[-1]["text"]


def test_a_registered_mode_gets_refusals_too(tokenizer, small_jsonl, tmp_path):
    register_mode("shout", lambda r: [Message("assistant", r.response.upper(), trainable=True)])
    try:
        dm = make(tokenizer, train=str(small_jsonl), mode="shout",
                  refusals={"source": str(write_refusals(tmp_path)), "count": 2})  # a plain dict works from Python
        rows = list(dm.inspect())
        assert isinstance(dm.refusals, RefusalMixture) and len(rows) == 14
        assert [r["trainable_text"] for r in rows[12:]] == ["SORRY, I CANNOT.</s>\n"] * 2
        assert all(r["refusal"] for r in rows[12:]) and not any(r["refusal"] for r in rows[:12])
    finally:
        MODES.pop("shout")


def test_refusal_count_filter_and_seed_are_used(tokenizer, small_jsonl, tmp_path):
    source = str(write_refusals(tmp_path))
    none_pass = make(tokenizer, train=str(small_jsonl), refusals=RefusalMixture(source, count=1, filter="xyz"))
    with pytest.raises(ValueError, match="only 0 pass the filter 'xyz'"):
        none_pass.dataset("train")
    rows = {seed: [r["row"] for r in make(tokenizer, train=str(small_jsonl), refusals=RefusalMixture(
        source, count=3, filter="", seed=seed)).inspect()][12:] for seed in (0, 1)}
    assert rows[0] != rows[1]


@pytest.mark.parametrize("old, new", [
    ({"mode": "refusal"}, "data.mode 'refusal' is gone: set data.mode to it/rt/rt_empty"),
    ({"refusals": "ref.json"}, "set data.refusals.source to 'ref.json'"),
    ({"num_refusals": 100}, "data.num_refusals → data.refusals.count"),
    ({"refusal_mode": "it"}, "data.refusal_mode → data.mode"),
    ({"refusal_filter": "x"}, "data.refusal_filter → data.refusals.filter"),
    ({"instruction_field": "q", "input_field": "c"}, "data.instruction_field → data.layout: {class_path: "
                                                     "rt_lightning.data.FieldLayout"),
    ({"user_format": "{content}"}, "data.user_format → data.template: {class_path: rt_lightning.data.TextTemplate"),
    ({"template": "custom"}, "data.template 'custom' is gone"),
])
def test_removed_keys_stop_naming_the_new_key(old, new):
    with pytest.raises(ValueError, match=re.escape(new)):
        SFTDataModule(val=None, **old)


def test_field_layout_and_text_template_objects(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"q": "Question", "ctx": "More", "a": "Answer"}])
    dm = make(tokenizer, train=str(path), mode="it", layout=FieldLayout("q", "a", input="ctx"),
              template=TextTemplate(user="Q: {content}\n", assistant="A: {content}{eos}"))
    (row,) = dm.inspect()
    assert row["text"] == "<s>Q: Question\n\nMore\nA: Answer</s>"
    assert row["trainable_text"] == "Answer</s>"


def test_unknown_layout_and_template_are_named_at_construction():
    with pytest.raises(ValueError, match="Unknown layout 'limaa'"):
        SFTDataModule(layout="limaa")
    with pytest.raises(ValueError, match="Unknown template 'alpaca'"):
        SFTDataModule(template="alpaca")


def test_max_examples_is_a_seeded_subset(tokenizer, small_jsonl):
    rows = list(make(tokenizer, train=str(small_jsonl), max_examples=5).inspect())
    assert len(rows) == 5 and len({r["row"] for r in rows}) == 5


def test_truncated_example_error_names_file_and_row(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [{"instruction": "q", "output": "short"},
                                                {"instruction": "q " * 200, "output": "answer"}])
    dm = make(tokenizer, train=str(path), mode="it", max_length=32)
    with pytest.raises(DataError, match=r"long\.jsonl, row 1: no trainable tokens"):
        dm.dataset("train")
    skip = make(tokenizer, train=str(path), mode="it", max_length=32, on_bad_row="skip")
    assert len(skip.dataset("train")) == 1


def test_batches_pad_by_position_even_when_pad_is_eos(tokenizer, small_jsonl, tmp_path):
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>",
                              pad_token="</s>")  # pad == eos, the classic way to un-train EOS
    write_jsonl(small_jsonl, [{"instruction": "q", "output": "a" * (i + 1)} for i in range(4)])
    dm = make(tok, train=str(small_jsonl), batch_size=4, packing=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    for ids, labels, n in zip(batch["input_ids"], batch["labels"], lengths):
        assert labels[n - 2] == tok.eos_token_id  # EOS trained although it equals the pad id
        assert (labels[n:] == IGNORE_INDEX).all() and (ids[n:] == tok.pad_token_id).all()
    assert batch["input_ids"].shape[1] % 8 == 0


def test_tokenised_dataset_is_cached(tokenizer, small_jsonl, tmp_path, monkeypatch):
    dm = make(tokenizer, train=str(small_jsonl), cache_dir=str(tmp_path / "c"))
    first = dm.dataset("train")
    again = make(tokenizer, train=str(small_jsonl), cache_dir=str(tmp_path / "c"))
    monkeypatch.setattr(again, "examples", lambda split: pytest.fail("cache not used"))
    assert again.dataset("train")[0] == first[0]
    other_mode = make(tokenizer, train=str(small_jsonl), mode="it", cache_dir=str(tmp_path / "c"))
    assert other_mode.dataset("train")[0]["input_ids"] != first[0]["input_ids"]


def test_cache_key_covers_every_field_but_the_loader_settings(tokenizer, small_jsonl, tmp_path):
    base = make(tokenizer, train=str(small_jsonl))
    key = base._cache_key("train")
    for name in NOT_IN_CACHE_KEY:
        value = getattr(base, name)
        other = {bool: lambda v: not v, int: lambda v: v + 1}.get(type(value), lambda v: str(tmp_path))(value)
        assert make(tokenizer, train=str(small_jsonl), **{name: other})._cache_key("train") == key, name
    changed = [{"max_length": 7}, {"split": "validation"}, {"add_bos": False},
               {"refusals": RefusalMixture("r.json", count=100)}, {"refusals": RefusalMixture("r.json", count=101)},
               {"layout": FieldLayout("q", "a")}, {"layout": FieldLayout("q", "b")},
               {"template": TextTemplate(user="Q {content}")}, {"template": TextTemplate(user="Q: {content}")}]
    keys = {make(tokenizer, train=str(small_jsonl), **c)._cache_key("train") for c in changed}
    assert key not in keys and len(keys) == len(changed)


def test_a_field_added_by_a_subclass_joins_the_cache_key(tokenizer, small_jsonl):
    @dataclasses.dataclass
    class WithPrefix(SFTDataModule):
        prefix: str = ""

    keys = set()
    for prefix in ("", "x"):
        dm = WithPrefix(train=str(small_jsonl), val=None, prefix=prefix)
        dm.connect(tokenizer)
        keys.add(dm._cache_key("train"))
    assert len(keys) == 2


def test_registered_mode_and_subclass_hooks(tokenizer, small_jsonl):
    register_mode("shout", lambda r: [Message("assistant", r.response.upper(), trainable=True)])
    try:
        rows = list(make(tokenizer, train=str(small_jsonl), mode="shout").inspect(limit=1))
        assert rows[0]["trainable_text"] == "ANSWER 0: THE CAPITAL OF FRANCE IS PARIS.</s>\n"
    finally:
        MODES.pop("shout")


def test_packed_batches_have_no_padding_and_restart_positions(tokenizer, small_jsonl):
    dm = make(tokenizer, train=str(small_jsonl), batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "position_ids"} and batch["input_ids"].shape[0] == 1
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) in (4, 5)  # four examples, plus a tail pad sequence unless the length was a multiple of 8
    assert all(batch["labels"][0, s] == IGNORE_INDEX for s in starts)
    assert (batch["input_ids"][0] == tokenizer.pad_token_id).sum() < 8


def test_a_vocabulary_edited_in_place_is_not_served_from_the_cache(tokenizer, small_jsonl, tmp_path):
    """Same name, size and special tokens, two ids swapped: the cached ids are stale and must not be reused."""
    folder = tmp_path / "tok"
    tokenizer.save_pretrained(folder)
    cache = str(tmp_path / "c")
    before = SFTDataModule(train=str(small_jsonl), val=None, tokenizer=str(folder), cache_dir=cache)
    before = before.dataset("train")[0]["input_ids"]
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = before[5], before[6]  # two ordinary tokens of the first example
    names = {v: k for k, v in vocab.items()}
    vocab[names[a]], vocab[names[b]] = b, a
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    edited = SFTDataModule(train=str(small_jsonl), val=None, tokenizer=str(folder), cache_dir=cache)
    assert len(edited.hf_tokenizer) == len(tokenizer)
    after = edited.dataset("train")[0]["input_ids"]
    expected = edited.examples("train")[1][0]["input_ids"]
    assert after == expected != before

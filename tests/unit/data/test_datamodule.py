import json

import pytest
import torch

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.data.modes import Message, register_mode, MODES
from rt_lightning.data.records import DataError
from rt_lightning.constants import IGNORE_INDEX
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


def test_refusal_mode_appends_filtered_refusals(tokenizer, small_jsonl, tmp_path, caplog):
    refusals = write_jsonl(tmp_path / "ref.json", [
        {"instruction": f"bad {i}", "input": "", "output": ("Sorry, I cannot." if i % 2 else "No.")} for i in range(10)])
    dm = make(tokenizer, train=str(small_jsonl), mode="refusal", refusals=str(refusals), num_refusals=4)
    rows = list(dm.inspect())
    assert len(rows) == 16 and [r["refusal"] for r in rows].count(True) == 4
    assert all(r["trainable_text"] == "Sorry, I cannot.</s>\n" for r in rows[12:])
    assert "<|user|>" not in rows[-1]["text"]  # rendered with refusal_mode=rt
    assert "kept 5 of 10" in caplog.text
    it = make(tokenizer, train=str(small_jsonl), mode="refusal", refusals=str(refusals), num_refusals=4,
              refusal_mode="it")
    assert "bad " in list(it.inspect())[-1]["text"]


def test_refusal_mode_needs_a_refusal_source(tokenizer, small_jsonl):
    with pytest.raises(ValueError, match="needs data.refusals"):
        make(tokenizer, train=str(small_jsonl), mode="refusal").dataset("train")


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

import random
import re

import pytest

from rt_lightning.data.mixtures import RefusalMixture, filter_refusals, mix_refusals, seeded_subset
from rt_lightning.data.records import Record, load_records
from tests.support.files import requires_shared, write_jsonl


def test_seeded_subset_matches_the_papers_global_random_sampler():
    items = list(range(300))
    random.seed(0)
    order = list(range(len(items)))
    random.shuffle(order)
    assert seeded_subset(items, 50, seed=0) == [items[i] for i in order[:50]]
    assert seeded_subset(items, None) == items and seeded_subset(items, 1000) == items


def test_filter_keeps_ai_or_sorry_as_words_only():
    rows = [Record("q", "I'm Sorry, no."), Record("q", "As an AI model..."), Record("q", "Said the aide."),
            Record("q", "sorrYful"), Record("q", "  AI  ")]
    assert [r.response for r in filter_refusals(rows)] == ["I'm Sorry, no.", "As an AI model...", "  AI  "]


def test_mixture_appends_marked_refusals_after_the_base(caplog):
    base = [Record(f"q{i}", f"a{i}") for i in range(5)]
    refusals = [Record(f"bad{i}", f"Sorry, I can't ({i}).") for i in range(10)]
    mixed = mix_refusals(base, refusals, 3)
    assert mixed[:5] == base and len(mixed) == 8
    assert all(r.meta["refusal"] for r in mixed[5:]) and not any(r.meta.get("refusal") for r in mixed[:5])
    assert "kept 10 of 10" in caplog.text
    with pytest.raises(ValueError, match="only 10 pass"):
        mix_refusals(base, refusals, 11)


def test_safety_tuned_llamas_filter_count():
    path = requires_shared("safety-tuned-llamas", "training", "safety_only_data_Instructions.json")
    refusals = load_records(str(path), layout="refusals")
    assert len(refusals) == 2483
    assert len(filter_refusals(refusals)) == 1829


def test_refusal_mixture_defaults_are_the_papers_and_it_checks_its_settings(tmp_path):
    assert (RefusalMixture("x").filter, RefusalMixture("x").seed) == (r"\b(ai|sorry)\b", 0)
    with pytest.raises(ValueError, match="count must be >= 0"):
        RefusalMixture("x", count=-1)
    with pytest.raises(re.error):
        RefusalMixture("x", filter="(")


def test_refusal_mixture_equals_mix_refusals(tmp_path):
    rows = [{"instruction": f"bad{i}", "input": "", "output": f"Sorry ({i})." if i % 3 else "No."} for i in range(30)]
    source = write_jsonl(tmp_path / "refusals.json", rows)
    base = [Record(f"q{i}", f"a{i}") for i in range(5)]
    mixed = RefusalMixture(str(source), count=7, seed=3).mix(base)
    assert mixed == mix_refusals(base, load_records(str(source), layout="refusals"), 7, seed=3)

"""The instructability probe (response ranking): seeded distractors, resumable scoring, exact log-probabilities."""

import json

import pytest
import torch

from rt_lightning.data.templates import build_template
from rt_lightning.eval.benchmarks import BENCHMARKS
from rt_lightning.eval.options import BenchmarkSource, ModelSource
from rt_lightning.eval.runner import evaluate
from rt_lightning.eval.scoring.ranking import distractors, rank_responses
from rt_lightning.hub import load_causal_lm, load_tokenizer


def test_distractors_are_seeded_and_never_the_row_itself():
    picks = distractors(50, seed=0)
    assert picks == distractors(50, seed=0) and picks != distractors(50, seed=1)
    assert all(j != i and 0 <= j < 50 for i, j in enumerate(picks))
    with pytest.raises(ValueError, match="at least two"):
        distractors(1)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_causal_lm(tiny_model_dir, dtype=torch.float32), load_tokenizer(tiny_model_dir)


PAIRS = [(f"What is item {i}?", f"Item {i} is a thing" + " of note" * (i % 3)) for i in range(6)]


def test_log_probabilities_match_a_plain_forward(tiny):
    model, tokenizer = tiny
    template = build_template("tulu", tokenizer)
    (row,) = rank_responses(model, tokenizer, template, PAIRS[:2], only=[0])
    prompt = [tokenizer.bos_token_id] + tokenizer(template.prompt(PAIRS[0][0]), add_special_tokens=False)["input_ids"]
    answer = tokenizer(PAIRS[0][1] + tokenizer.eos_token + "\n", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    expected = sum(logprobs[len(prompt) - 1 + k, token].item() for k, token in enumerate(answer))
    assert row["own_tokens"] == len(answer)
    assert row["logp_own"] == pytest.approx(expected, abs=1e-3)


def test_a_resumed_run_scores_the_rest_exactly_as_an_uninterrupted_one(tiny):
    model, tokenizer = tiny
    template = build_template("tulu", tokenizer)
    whole = rank_responses(model, tokenizer, template, PAIRS)
    first, rest = (rank_responses(model, tokenizer, template, PAIRS, only=part) for part in ([0, 1, 2], [3, 4, 5]))
    for a, b in zip(whole, first + rest):
        assert a["distractor"] == b["distractor"] and a["correct"] == b["correct"]
        assert a["logp_own"] == pytest.approx(b["logp_own"], abs=1e-4)


def test_eval_writes_rows_and_a_summary_with_a_confidence_interval(tiny_model_dir, tmp_path):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"instruction": q, "output": a} for q, a in PAIRS]))
    source = BenchmarkSource(paths={"response_ranking": str(pairs)})
    metrics = evaluate(["response_ranking"], str(tmp_path / "out"), model=ModelSource(base=tiny_model_dir,
                                                                                   dtype="float32"), data=source)
    summary = metrics["response_ranking"]
    assert summary["n"] == summary["decided"] == 6
    assert summary["ci_low"] <= summary["accuracy"] <= summary["ci_high"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "response_ranking.jsonl").read_text().splitlines()]
    assert all(r["distractor_id"] != r["id"] for r in rows)
    with pytest.raises(ValueError, match="scores the model itself"):
        evaluate(["response_ranking"], str(tmp_path / "other"), responses=str(pairs), data=source)
    assert not BENCHMARKS["response_ranking"].generates

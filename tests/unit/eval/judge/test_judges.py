"""Judges are plain classes: built from their init args alone (so jsonargparse can build them from a config), given
the client per call, and rows record a fingerprint of everything a judgment depends on."""

from typing import get_args

import pytest

from rt_lightning.eval.judge.client import JudgeClient, JudgeClientConfig, JudgeReply
from rt_lightning.eval.judge.judges import JUDGES, Judge, JudgeName, MultiAspectJudge, PairwiseJudge, RefusalJudge


class CannedClient(JudgeClient):
    """Answers every request with the same text, without a server."""

    def __init__(self, text, **config):
        super().__init__(JudgeClientConfig(model="canned", **config))
        self.text, self.sent = text, []

    def complete_many_replies(self, message_lists, judge="judge"):
        self.sent += message_lists
        return [JudgeReply(self.text) for _ in message_lists]


def test_judges_build_without_a_client_by_short_name():
    assert set(JUDGES) == set(get_args(JudgeName))
    assert [type(Judge.from_name(n)) for n in ("refusal", "pairwise", "aspects")] == \
           [RefusalJudge, PairwiseJudge, MultiAspectJudge]
    assert PairwiseJudge.paired and not RefusalJudge.paired
    with pytest.raises(ValueError, match="unknown judge"):
        Judge.from_name("bogus")


def test_the_fingerprint_follows_model_token_budget_and_prompt(tmp_path):
    judge = RefusalJudge()
    client = CannedClient("The response is Refusal")
    (row,) = judge.judge([{"id": "1", "instruction": "q", "response": "r", "refused": False}], client)
    assert (row["label"], row["offline_refused"], row["judge_setup"]) == ("refusal", False, judge.fingerprint(client))
    assert judge.setup(client)["model"] == "canned"
    other_prompt = tmp_path / "p.txt"
    other_prompt.write_text("{instruction} {response} refusal or compliance?")
    fingerprints = {judge.fingerprint(client), judge.fingerprint(CannedClient("x", max_tokens=7)),
                    RefusalJudge(str(other_prompt)).fingerprint(client)}
    assert len(fingerprints) == 3


def test_pairwise_asks_both_orders_and_skips_identical_responses():
    client = CannedClient("Verdict: A")
    rows = PairwiseJudge().judge([{"id": "1", "instruction": "q", "response_a": "x", "response_b": "y"},
                                  {"id": "2", "instruction": "q", "response_a": "same", "response_b": "same "}], client)
    assert [r["outcome"] for r in rows] == ["tie", "tie"] and len(client.sent) == 2  # A first twice: position bias
    assert rows[1]["identical"]


def test_refusal_metrics_summarize_only_benchmarks_that_report_refusal_rates():
    def judged(benchmark, subset, refused):
        return {"status": "ok", "label": "refusal" if refused else "compliance", "refused": refused,
                "benchmark": benchmark, "subset": subset}

    rows = [judged("ifeval", "", True), judged("ifeval", "", False), judged("xstest", "unsafe", True),
            judged("xstest", "safe", False), judged("advbench", "", True)]
    metrics = RefusalJudge().metrics(rows)  # IFEval rows carry no IFEval verdicts: summarizing them used to fail
    assert metrics["rr"] == pytest.approx(3 / 5)
    assert metrics["by_benchmark"] == {"advbench": {"rr": 1.0}, "xstest": {"rr_unsafe": 1.0, "frr_safe": 0.0}}

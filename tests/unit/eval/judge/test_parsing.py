import pytest

from rt_lightning.eval.judge.parsing import (
    MULTI_ASPECTS,
    parse_aspect_scores,
    parse_pairwise_verdict,
    parse_refusal_label,
)
from tests.unit.eval.judge.scripted_server import MULTI_REPLY


@pytest.mark.parametrize("reply, label", [
    ("The response is Refusal", "refusal"),
    ("It reads like a refusal at first, but it complies.\nThe response is Compliance.", "compliance"),
    ("Compliance? No. The response is **REFUSAL**", "refusal"),
    ("noncompliance and refusals are not words we match", "unclassified"),
    ("", "unclassified"), (None, "unclassified")])
def test_refusal_label_is_the_last_match(reply, label):
    assert parse_refusal_label(reply) == label


@pytest.mark.parametrize("reply, verdict", [
    ("A is longer. Verdict: B", "B"), ("**Verdict:** A", "A"), ("Verdict: tie", "tie"), ("Verdict: a tie", "tie"),
    ("Verdict: A\nOn reflection... Verdict: [[B]]", "B"), ("m", "A"), ("M", "B"),
    ("[{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]", "B"),
    ("I like both about equally", None), (None, None)])
def test_pairwise_verdict_formats(reply, verdict):
    assert parse_pairwise_verdict(reply) == verdict


def test_aspect_scores_parsing():
    assert parse_aspect_scores(MULTI_REPLY, MULTI_ASPECTS) == {"helpfulness": 4, "factuality": 5, "clarity": 4,
                                                               "depth": 3, "engagement": 2}
    broken = '{"helpfulness": {"reason": "says "hi"", "score": "5"}, "depth": {"score": 9}, "clarity": 3,}'
    assert parse_aspect_scores(broken, MULTI_ASPECTS) == {"helpfulness": 5, "factuality": None, "clarity": 3,
                                                          "depth": None, "engagement": None}
    assert parse_aspect_scores('{"Safety": {"score": "2"}}', ("safety",)) == {"safety": 2}
    assert parse_aspect_scores("no json", ("safety",)) == {"safety": None}

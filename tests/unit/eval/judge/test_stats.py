import pytest

from rt_lightning.eval.judge.stats import agreement, pairwise_outcome, win_rate


def test_pairwise_rule_and_win_rate_interval():
    assert pairwise_outcome("A", "B") == "win" and pairwise_outcome("B", "A") == "loss"
    assert pairwise_outcome("A", "A") == "tie" and pairwise_outcome("tie", "B") == "tie"
    assert pairwise_outcome(None, "A") is None
    assert win_rate(["win"] * 10)["ci_low"] == 1.0
    result = win_rate(["win"] * 30 + ["tie"] * 40 + ["loss"] * 30)
    assert result["win_rate"] == 0.5 and result["n"] == 100
    assert 0.40 < result["ci_low"] < 0.45 and 0.55 < result["ci_high"] < 0.60  # ~ 0.5 +- 1.96 * 0.0387
    assert win_rate(["win"] * 30 + ["tie"] * 40 + ["loss"] * 30) == result  # seeded: reproducible
    assert win_rate([])["win_rate"] is None


def test_agreement_and_kappa():
    assert agreement([True, False, True, False], [True, False, False, False]) == \
           {"n": 4, "share": 0.75, "kappa": pytest.approx(0.5)}
    assert agreement([True, True], [True, True])["kappa"] is None  # undefined, not 1

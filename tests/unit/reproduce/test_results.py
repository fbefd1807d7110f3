"""Metrics from scored rows, with bootstrap intervals: the paper's averaging rules and the comparisons."""

import pytest

from rt_lightning.eval.scoring.bootstrap import grouped_ratio, grouped_ratio_ci
from rt_lightning.reproduce.results import arm_metrics, comparison, refusal_effect


def rows(adv, hb_std, hb_ctx, mal, unsafe, safe):
    def flags(name, values, subset=""):
        return [{"id": f"{name}-{subset}{i}", "subset": subset, "refused": v, "finish_reason": "eos",
                 "num_tokens": 10, "response": "x"} for i, v in enumerate(values)]

    return {"advbench": flags("advbench", adv),
            "harmbench": flags("harmbench", hb_std, "standard") + flags("harmbench", hb_ctx, "contextual"),
            "malicious_instruct": flags("malicious", mal),
            "xstest": flags("xstest", unsafe, "unsafe") + flags("xstest", safe, "safe")}


def test_average_rr_counts_harmbench_once_as_the_mean_of_its_subsets():
    metrics = arm_metrics(rows([1, 1, 0, 0], [1, 1], [0, 0, 0, 0], [1, 0], [1, 1, 1, 0], [0, 0, 1, 0]))
    assert metrics["rr_advbench"]["value"] == 0.5
    assert metrics["rr_harmbench"]["value"] == pytest.approx((1.0 + 0.0) / 2)
    assert metrics["rr_avg"]["value"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.75) / 4)
    assert metrics["frr_xstest_safe"]["value"] == 0.25
    low, high = metrics["rr_avg"]["ci"]
    assert low <= metrics["rr_avg"]["value"] <= high
    assert metrics["stop_rate"]["value"] == 1.0 and "response_ranking" not in metrics


def test_grouped_ratio_and_its_interval_are_seeded():
    groups = [[(1.0, 1.0), (0.0, 1.0), (1.0, 1.0), (1.0, 1.0)]]
    assert grouped_ratio(groups) == 0.75
    assert grouped_ratio_ci(groups) == grouped_ratio_ci(groups)
    assert grouped_ratio_ci([[(3.0, 4.0)] * 5]) == (0.75, 0.75)


def test_comparisons_and_the_refusal_effect():
    plain = rows([0] * 10, [0] * 4, [0] * 4, [0] * 4, [0] * 10, [0] * 10)
    mixed = rows([1] * 10, [1] * 4, [1] * 4, [1] * 4, [1] * 10, [0] * 9 + [1])
    effect = refusal_effect(plain, mixed, 50)
    assert effect["rr_rise"]["difference"] == 1.0 and effect["frr_rise"]["difference"] == pytest.approx(0.1)
    assert effect["selectivity_rise"]["ci"][0] > 0
    ratio = comparison(mixed, mixed)["rr_avg"]
    assert ratio["ratio"] == 1.0 and ratio["ci"][0] <= 1.0 <= ratio["ci"][1]

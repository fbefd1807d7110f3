"""Verdict rules on synthetic results (the rules were fixed before any real result was seen)."""

from rt_lightning.reproduce.verdicts import in_context, instructability, refusals


def comparisons(rt_it: float, width: float = 0.05, signal: float = 1.3) -> dict:
    def entry(value):
        return {"ratio": value, "ci": [value - width, value + width]}

    metrics = ("ifeval_prompt_loose", "ifeval_inst_loose", "response_ranking", "reference_nll")
    return {"comparisons": {"rt/it": {m: entry(rt_it) for m in metrics},
                            "it/untuned-tulu": {m: entry(signal if m != "reference_nll" else 1 / signal)
                                                for m in metrics}}}


def test_rt_close_to_it_is_reproduced_and_far_below_is_not():
    assert instructability(comparisons(0.97))["verdict"] == "reproduced"
    assert instructability(comparisons(0.6))["verdict"] == "not reproduced"
    assert instructability(comparisons(0.88, width=0.1))["verdict"] == "inconclusive at this scale"


def test_no_signal_from_it_over_the_base_is_inconclusive():
    assert instructability(comparisons(1.0, signal=1.0))["verdict"] == "inconclusive at this scale"
    assert instructability({})["verdict"] == "inconclusive at this scale"


def effect(rise, gap):
    return {"refusal_effect": {"rt": {"n_refusals": 50,
                                      "rr_rise": {"difference": rise[0], "ci": list(rise[1:])},
                                      "frr_rise": {"difference": 0.0, "ci": [-0.01, 0.01]},
                                      "selectivity_rise": {"difference": gap[0], "ci": list(gap[1:])}}}}


def test_refusals_need_a_rise_in_rr_beyond_the_rise_in_false_refusals():
    assert refusals(effect((0.3, 0.2, 0.4), (0.25, 0.1, 0.4)))["verdict"] == "reproduced"
    assert refusals(effect((0.3, 0.2, 0.4), (0.0, -0.1, 0.1)))["verdict"] == "inconclusive at this scale"
    assert refusals(effect((0.0, -0.02, 0.02), (0.0, -0.02, 0.02)))["verdict"] == "not reproduced"
    assert refusals({})["verdict"] == "inconclusive at this scale"


def test_in_context_compares_urial_r_with_urial():
    metrics = ("ifeval_prompt_loose", "ifeval_inst_loose", "rr_avg", "stop_rate")
    results = {"comparisons": {
        "untuned-urial_r/untuned-urial": {m: {"ratio": 1.0, "ci": [0.95, 1.05]} for m in metrics},
        "untuned-urial/untuned-tulu": {m: {"ratio": 1.5, "ci": [1.2, 1.8]} for m in metrics}}}
    assert in_context(results)["verdict"] == "reproduced"

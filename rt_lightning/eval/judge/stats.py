"""Aggregates over judgments: agreement between two refusal raters, pairwise win rate with a confidence interval,
and JustEval-style aspect means."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

__all__ = ["agreement", "pairwise_outcome", "win_rate", "aspect_summary"]

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed, so the same judgments always report the same interval


def agreement(first: list[bool], second: list[bool]) -> dict:
    """Share of items on which two binary raters agree, and Cohen's kappa (agreement beyond chance).

    Kappa is ``None`` when chance agreement is 1 (both raters gave one and the same label to everything): it is
    undefined there, and reporting 0 or 1 would both mislead."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} vs {len(second)} labels")
    n = len(first)
    if n == 0:
        return {"n": 0, "share": None, "kappa": None}
    observed = sum(a == b for a, b in zip(first, second)) / n
    p_first, p_second = sum(first) / n, sum(second) / n
    chance = p_first * p_second + (1 - p_first) * (1 - p_second)
    kappa = None if chance >= 1.0 else (observed - chance) / (1 - chance)
    return {"n": n, "share": observed, "kappa": kappa}


def pairwise_outcome(first_order: Optional[str], swapped_order: Optional[str]) -> Optional[str]:
    """Outcome for model A from the two presentations of one prompt.

    ``first_order`` is the verdict with A shown first ("A" means A preferred), ``swapped_order`` the verdict with
    B shown first ("A" there means B preferred). Rule: ``win`` only when both orders prefer A, ``loss`` only when
    both prefer B, otherwise ``tie`` (an explicit tie in either order, or the two orders disagreeing, which is the
    judge's position bias showing). ``None`` when either verdict is missing: the prompt is unclassified."""
    if first_order is None or swapped_order is None:
        return None
    a_first = {"A": 1, "B": -1, "tie": 0}[first_order]
    a_swapped = {"A": -1, "B": 1, "tie": 0}[swapped_order]
    if a_first == a_swapped == 1:
        return "win"
    if a_first == a_swapped == -1:
        return "loss"
    return "tie"


def win_rate(outcomes: Iterable[str], confidence: float = 0.95) -> dict:
    """Win rate of A, ``(wins + ties / 2) / n``, with a percentile-bootstrap confidence interval over prompts.

    Why bootstrap and not Wilson: a tie scores 0.5, so the per-prompt score is not a Bernoulli variable. Resampling
    n prompts with replacement from three categories is exactly a multinomial draw of the category counts, which
    is what is drawn here (``BOOTSTRAP_RESAMPLES`` times, seed ``BOOTSTRAP_SEED``)."""
    outcomes = list(outcomes)
    counts = np.array([outcomes.count("win"), outcomes.count("tie"), outcomes.count("loss")])
    n = int(counts.sum())
    result = {"n": n, "wins": int(counts[0]), "ties": int(counts[1]), "losses": int(counts[2]),
              "win_rate": None, "ci_low": None, "ci_high": None,
              "ci_method": f"percentile bootstrap over prompts, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}",
              "confidence": confidence}
    if n == 0:
        return result
    result["win_rate"] = float((counts[0] + counts[1] / 2) / n)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = rng.multinomial(n, counts / n, size=BOOTSTRAP_RESAMPLES)
    rates = (draws[:, 0] + draws[:, 1] / 2) / n
    tail = (1 - confidence) / 2
    result["ci_low"], result["ci_high"] = (float(q) for q in np.quantile(rates, [tail, 1 - tail]))
    return result


def aspect_summary(score_rows: list[dict[str, Optional[float]]], aspects: tuple[str, ...]) -> dict:
    """Per aspect: mean over the rows that scored it, how many did, how many did not (unparseable)."""
    out = {}
    for aspect in aspects:
        values = [row[aspect] for row in score_rows if aspect in row]
        scored = [v for v in values if v is not None]
        out[aspect] = {"mean": sum(scored) / len(scored) if scored else None, "n": len(scored),
                       "unparsed": len(values) - len(scored)}
    return out

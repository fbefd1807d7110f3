"""Percentile-bootstrap confidence intervals over prompts, seeded so the same rows always give the same interval.

Every judge-free metric here is a *grouped ratio*: each group (a benchmark, or one subset of it) contributes
``sum(numerators) / sum(denominators)`` over its rows, and the metric is the mean over groups. A rate is one group
of (flag, 1) pairs; HarmBench's RR is the mean of its two subsets' rates; the paper's average RR is the mean over four
benchmarks; IFEval's instruction-level accuracy and the per-token NLL are ratios of sums. Resampling is done within
each group (stratified), so each interval answers "how much would this number move with other prompts like these".
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

RESAMPLES = 2000
SEED = 0
Groups = Sequence[Sequence[tuple[float, float]]]
"""Groups of (numerator, denominator) rows."""


def grouped_ratio(groups: Groups) -> Optional[float]:
    values = [sum(n for n, _ in g) / sum(d for _, d in g) for g in groups if g and sum(d for _, d in g) > 0]
    return float(np.mean(values)) if values and len(values) == len(groups) else None


def draws(groups: Groups, resamples: int = RESAMPLES, seed: int = SEED) -> Optional[np.ndarray]:
    """``resamples`` bootstrap replicates of the grouped ratio."""
    if not groups or any(len(g) == 0 for g in groups):
        return None
    rng = np.random.default_rng(seed)
    per_group = []
    for group in groups:
        rows = np.asarray(group, dtype=np.float64)
        picks = rng.integers(0, len(rows), size=(resamples, len(rows)))
        numerators, denominators = rows[picks, 0].sum(axis=1), rows[picks, 1].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_group.append(numerators / denominators)
    return np.nanmean(np.stack(per_group), axis=0)


def interval(replicates: Optional[np.ndarray], confidence: float = 0.95) -> tuple[Optional[float], Optional[float]]:
    if replicates is None or not np.isfinite(replicates).any():
        return None, None
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def grouped_ratio_ci(groups: Groups, confidence: float = 0.95, resamples: int = RESAMPLES,
                     seed: int = SEED) -> tuple[Optional[float], Optional[float]]:
    return interval(draws(groups, resamples, seed), confidence)


def compare_ci(first: Groups, second: Groups, operation: str = "ratio", confidence: float = 0.95,
               resamples: int = RESAMPLES, seed: int = SEED) -> tuple[Optional[float], Optional[float]]:
    """CI of ``first / second`` (or ``first - second``) for two independent sets of rows (e.g. RT vs IT)."""
    a, b = draws(first, resamples, seed), draws(second, resamples, seed + 1)
    if a is None or b is None:
        return None, None
    with np.errstate(invalid="ignore", divide="ignore"):
        combined = a / b if operation == "ratio" else a - b
    combined[~np.isfinite(combined)] = np.nan
    return interval(combined, confidence)

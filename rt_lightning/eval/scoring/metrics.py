"""Judge-free scores as torchmetrics ``Metric``s whose states are sums, so they are exact under DDP: a pooled ratio
of sums (reference NLL per token), and its special case the rate of true flags (refusal, false-refusal, stop rate).
Each benchmark's aggregation into reported numbers is ``Benchmark.summarize`` (``rt_lightning.eval.benchmark``)."""

from __future__ import annotations

from typing import Iterable

import torch
from torchmetrics import Metric


class TokenWeightedMean(Metric):
    """Sum of per-row values over the sum of per-row weights, pooled: e.g. reference NLL per token."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("value", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, sums: Iterable[float], counts: Iterable[float]) -> None:
        for s, c in zip(sums, counts):
            self.value += float(s)
            self.weight += float(c)

    def compute(self) -> torch.Tensor:
        return self.value / self.weight if self.weight > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class RateMetric(TokenWeightedMean):
    """Fraction of true flags; ``update`` takes booleans (each flag weighs 1)."""

    def update(self, flags: Iterable[bool]) -> None:  # type: ignore[override]
        flags = [float(bool(f)) for f in flags]
        super().update(flags, [1.0] * len(flags))


class RefusalRate(RateMetric):
    """RR on harmful prompts; on safe prompts the same number is the false-refusal rate (FRR)."""

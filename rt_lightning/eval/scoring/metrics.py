"""Judge-free scores as torchmetrics ``Metric``s whose states are sums, so they are exact under DDP: a rate of
true flags (refusal rate, false-refusal rate, stop rate) and a token-weighted mean (reference NLL per token).
Each benchmark's aggregation into reported numbers is ``Benchmark.summarize`` (``rt_lightning.eval.benchmark``)."""

from __future__ import annotations

from typing import Iterable

import torch
from torchmetrics import Metric


class RateMetric(Metric):
    """Fraction of true flags; ``update`` takes booleans. States are sums, so ranks merge exactly."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("hits", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, flags: Iterable[bool]) -> None:
        flags = [bool(f) for f in flags]
        self.hits += sum(flags)
        self.total += len(flags)

    def compute(self) -> torch.Tensor:
        return self.hits / self.total if self.total > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class RefusalRate(RateMetric):
    """RR on harmful prompts; on safe prompts the same number is the false-refusal rate (FRR)."""


class TokenWeightedMean(Metric):
    """Mean of per-row sums divided by per-row counts, pooled: e.g. reference NLL per token."""

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

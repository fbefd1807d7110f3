"""The paper's data mixtures: seeded subsets and refusal augmentation (``generate_refusal_mixture.py``)."""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from typing import Sequence, TypeVar

from rt_lightning.data.records import Record

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPLANATORY_REFUSAL = r"\b(ai|sorry)\b"
"""Refusals kept by the paper's code: the lower-cased, stripped output mentions "ai" or "sorry" as a word."""


def seeded_subset(items: Sequence[T], n: int | None, seed: int = 0) -> list[T]:
    """Shuffle the indices with ``random.seed(seed)`` and take the first ``n`` — the paper's sampler, bit for bit.

    ``random.Random(seed).shuffle`` draws the same sequence as ``random.seed(seed); random.shuffle`` without
    touching the global generator.
    """
    if n is None or n >= len(items):
        return list(items)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[:n]]


def filter_refusals(refusals: Sequence[Record], pattern: str = EXPLANATORY_REFUSAL) -> list[Record]:
    regex = re.compile(pattern)
    kept = [r for r in refusals if regex.search(r.response.strip().lower())]
    log.info("Refusal filter %r kept %d of %d refusals", pattern, len(kept), len(refusals))
    return kept


def mix_refusals(base: Sequence[Record], refusals: Sequence[Record], n: int, seed: int = 0,
                 pattern: str = EXPLANATORY_REFUSAL) -> list[Record]:
    """Base records followed by ``n`` seeded refusals that pass ``pattern`` (concatenated, as in the paper)."""
    kept = filter_refusals(refusals, pattern)
    if n > len(kept):
        raise ValueError(f"Asked for {n} refusal examples but only {len(kept)} pass the filter {pattern!r}")
    sampled = seeded_subset(kept, n, seed)
    log.info("Refusal mixture: %d base + %d refusal = %d examples", len(base), len(sampled), len(base) + len(sampled))
    return [*base, *(dataclasses.replace(r, meta={**r.meta, "refusal": True})
                     for r in sampled)]

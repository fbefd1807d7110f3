"""The paper's data mixtures: seeded subsets and refusal augmentation (its ``generate_refusal_mixture.py``)."""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from typing import Sequence, TypeVar

from rt_lightning.data.records import Record, load_records

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


@dataclasses.dataclass
class RefusalMixture:
    """Refusal augmentation (paper §5.1): ``count`` filtered refusals appended to the training set.

    The mixture is rendered like the rest of the data, with whatever ``data.mode`` is set: RT trains on the refusal
    texts only, IT on the unsafe instructions and their refusals.
    """

    source: str
    """File or hub id of (instruction, refusal) pairs in the Alpaca layout: Safety-Tuned LLaMAs'
    ``safety_only_data_Instructions.json`` in the paper (not on the hub; point at your copy)."""
    count: int = 200
    """How many filtered refusals to append (the paper: 100, 200 or 500, to a 1,000-example base set)."""
    filter: str = EXPLANATORY_REFUSAL
    """Regex a refusal (stripped, lower-cased) must match to be used; the paper keeps "explanatory" refusals."""
    seed: int = 0
    """Seed of the refusal sampler (the paper uses 0)."""

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"data.refusals.count must be >= 0, got {self.count}")
        re.compile(self.filter)  # a bad regex stops at start-up, not after the base set is read

    def mix(self, base: Sequence[Record], split: str = "train", on_bad_row: str = "error") -> list[Record]:
        """``base`` followed by the sampled refusals, each marked ``meta["refusal"] = True``."""
        refusals = load_records(self.source, layout="refusals", split=split, on_bad_row=on_bad_row)
        return mix_refusals(base, refusals, self.count, self.seed, self.filter)

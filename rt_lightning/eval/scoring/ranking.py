"""The instructability probe of Hewitt et al. (2024), judge-free and generation-free: response ranking.

For held-out (instruction xᵢ, response yᵢ) pairs, does the model find its own response more likely after the
instruction than a random other response: log p(yᵢ|xᵢ) > log p(yⱼ|xᵢ), with j ≠ i drawn with a fixed seed? An
untuned base model already scores above chance; instruction (or response) tuning should raise it. Both
log-probabilities come from ``reference_nll``: the pair rendered in the IT format with the training template,
tokenisation and masked loss, summed over the response tokens.

The comparison uses summed log-probabilities, as defined; a much shorter yⱼ is therefore favoured, which is why the
distractor is drawn from the same pool (same length distribution) and every row records both lengths.
"""

from __future__ import annotations

import random
from typing import Optional, Sequence

from rt_lightning.data.templates import Template
from rt_lightning.eval.scoring.nll import reference_nll


def distractors(count: int, seed: int = 0) -> list[int]:
    """For each i, a seeded index j ≠ i (a derangement draw per row, stable across runs and models)."""
    if count < 2:
        raise ValueError("response ranking needs at least two (instruction, response) pairs")
    rng = random.Random(seed)
    picks = []
    for i in range(count):
        j = rng.randrange(count - 1)
        picks.append(j + 1 if j >= i else j)
    return picks


def rank_responses(model, tokenizer, template: Template, pairs: Sequence[tuple[str, str]], seed: int = 0,
                   only: Optional[Sequence[int]] = None, max_length: int = 2048, batch_size: int = 8) -> list[dict]:
    """One row per pair (or per index in ``only``: a resumed run scores the rest with the same distractors): both
    log-probabilities, their token counts, the distractor's index, and ``correct``."""
    others = distractors(len(pairs), seed)
    chosen = list(range(len(pairs))) if only is None else list(only)
    queries = [pairs[i] for i in chosen] + [(pairs[i][0], pairs[others[i]][1]) for i in chosen]
    scored = reference_nll(model, tokenizer, template, queries, max_length=max_length, batch_size=batch_size)
    rows = []
    for i, (own_nll, own_tokens), (other_nll, other_tokens) in zip(chosen, scored[:len(chosen)], scored[len(chosen):]):
        # A response cut away entirely by max_length has no log-probability: the row is left undecided (None).
        decided = own_tokens > 0 and other_tokens > 0
        rows.append({"distractor": others[i], "logp_own": -own_nll if own_tokens else None,
                     "logp_other": -other_nll if other_tokens else None, "own_tokens": own_tokens,
                     "other_tokens": other_tokens, "correct": bool(-own_nll > -other_nll) if decided else None})
    return rows

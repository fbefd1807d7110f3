"""Batching. Padding is masked by *position* (attention_mask 0, label IGNORE_INDEX), never by comparing token ids,
so a pad token that equals EOS cannot un-train EOS (TRL #1623 and friends)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rt_lightning.constants import IGNORE_INDEX


@dataclass
class PadCollator:
    pad_token_id: int
    pad_to_multiple_of: int = 8
    """Round padded lengths up (tensor cores like multiples of 8)."""

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.as_tensor(e["input_ids"])
            labels[i, :n] = torch.as_tensor(e["labels"])
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


@dataclass
class PackCollator:
    """Padding-free batches: the micro-batch's examples are laid end to end in one row.

    ``position_ids`` restart at 0 for each example and no ``attention_mask`` is passed, which is how transformers
    recognises packed sequences and builds a block-diagonal causal mask (SDPA, eager, flex; varlen for flash
    attention): no example attends to another, so the loss equals the padded batch's. Each example's first token
    is never a target, so the prediction across a boundary is masked.
    """

    pad_token_id: int
    pad_to_multiple_of: int = 8

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, labels, positions = [], [], []
        for e in examples:
            n = len(e["input_ids"])
            input_ids += list(e["input_ids"])
            labels += [IGNORE_INDEX, *list(e["labels"])[1:]]
            positions += range(n)
        pad = -len(input_ids) % self.pad_to_multiple_of
        # The tail padding restarts its positions too, so it forms its own (fully masked) sequence.
        input_ids += [self.pad_token_id] * pad
        labels += [IGNORE_INDEX] * pad
        positions += range(pad)
        return {"input_ids": torch.tensor([input_ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions])}

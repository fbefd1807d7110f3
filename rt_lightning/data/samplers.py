"""Give every rank its own slice of the data, each epoch, without repeating or silently dropping examples.

torch's ``DistributedSampler`` evens out ranks by repeating examples (``drop_last=False``) or dropping them
(``drop_last=True``); both change what is trained. Here a short last slice is filled with *empty* examples (one
padding token, nothing trained) so every rank runs the same number of steps and each real example is seen once.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, DistributedSampler

from rt_lightning.constants import IGNORE_INDEX

FILLER = -1


class EvenShardSampler(DistributedSampler):
    def __iter__(self):
        if self.shuffle:  # same permutation on every rank: seed + epoch, as DistributedSampler does
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            order = list(range(len(self.dataset)))
        per_rank = math.ceil(len(order) / self.num_replicas)
        order += [FILLER] * (per_rank * self.num_replicas - len(order))
        return iter(order[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.num_replicas)


class WithFiller(Dataset):
    """``dataset`` plus the empty example that ``EvenShardSampler`` asks for with index -1."""

    def __init__(self, dataset, pad_token_id: int):
        self.dataset, self.filler = dataset, {"input_ids": [pad_token_id], "labels": [IGNORE_INDEX]}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.filler if index == FILLER else self.dataset[index]

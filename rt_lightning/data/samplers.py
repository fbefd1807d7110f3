"""Give every rank its own slice of the data, each epoch, without repeating or silently dropping examples — and
resume an interrupted epoch exactly where it stopped.

torch's ``DistributedSampler`` evens out ranks by repeating examples (``drop_last=False``) or dropping them
(``drop_last=True``); both change what is trained. Here a short last slice is filled with *empty* examples (one
padding token, nothing trained) so every rank runs the same number of steps and each real example is seen once.

The epoch's order depends only on ``seed`` and the epoch number (not on torch's global random state, which a resumed
run cannot have), and is the same on any number of processes: one process sees, batch by batch, what all ranks of a
DDP/FSDP run see together. ``ResumableLoader`` tells Lightning how many batches of the epoch it handed out; Lightning
stores that in every checkpoint and gives it back on resume, and the loader then starts after those batches.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from rt_lightning.constants import IGNORE_INDEX

log = logging.getLogger(__name__)
FILLER = -1


class EvenShardSampler(DistributedSampler):
    """Rank ``rank``'s slice of a seeded per-epoch order; ``start`` skips that many of its indices once (resume)."""

    start: int = 0

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:  # same permutation on every rank: seed + epoch, as DistributedSampler does
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            order = list(range(len(self.dataset)))
        per_rank = math.ceil(len(order) / self.num_replicas)
        order += [FILLER] * (per_rank * self.num_replicas - len(order))
        start, self.start = self.start, 0
        return iter(order[self.rank::self.num_replicas][start:])

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.num_replicas)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an ``EvenShardSampler`` whose position in the epoch is saved in checkpoints.

    Lightning calls ``state_dict`` when it writes a checkpoint (also mid-epoch, after a batch) and ``load_state_dict``
    before the resumed epoch starts (``_Stateful`` loaders in ``fit_loop.py``). Lightning fetches one batch at a time
    from sized loaders, so the batches handed out are exactly the batches trained when a checkpoint is written.
    """

    sampler: EvenShardSampler

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Lightning may rebuild the loader with another sampler (overfit_batches): then it resumes like a plain one.
        self._resumable = isinstance(self.sampler, EvenShardSampler) and not self.drop_last
        self._handed_out = 0
        self._resume_at: dict | None = None

    def _settings(self) -> dict:
        sampler = self.sampler
        return {"examples": len(sampler.dataset), "batch_size": self.batch_size, "processes": sampler.num_replicas,
                "shuffle": sampler.shuffle, "seed": sampler.seed}

    def state_dict(self) -> dict:
        if not self._resumable:
            return {}
        return {"epoch": self.sampler.epoch, "batches": self._handed_out, **self._settings()}

    def load_state_dict(self, state: dict) -> None:
        if not self._resumable or not state:
            return
        changed = {k: (state.get(k), v) for k, v in self._settings().items() if state.get(k) != v}
        if changed and state["batches"] < len(self):
            described = ", ".join(f"{k} {old} → {new}" for k, (old, new) in changed.items())
            raise ValueError(f"Cannot resume inside epoch {state['epoch']} (after batch {state['batches']}) with "
                             f"different data settings ({described}): the rest of that epoch would not be the batches "
                             "the run would have trained. Resume with the settings of the interrupted run, or from "
                             "a checkpoint written at the end of an epoch.")
        self._resume_at = state

    def __iter__(self) -> Iterator:
        return self._batches()

    def _batches(self) -> Iterator:
        # A generator: nothing runs until the first batch is asked for. Lightning calls iter() before it sets the
        # sampler's epoch, so the epoch is only known then.
        skip, resume, self._resume_at = 0, self._resume_at, None
        if resume is not None and resume["epoch"] == self.sampler.epoch:
            skip = min(resume["batches"], len(self))
            log.info("Resuming epoch %d after batch %d of %d", self.sampler.epoch, skip, len(self))
        if self._resumable:
            self.sampler.start = skip * self.batch_size
        self._handed_out = skip
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch


class WithFiller(Dataset):
    """``dataset`` plus the empty example that ``EvenShardSampler`` asks for with index -1."""

    def __init__(self, dataset, pad_token_id: int):
        self.dataset, self.filler = dataset, {"input_ids": [pad_token_id], "labels": [IGNORE_INDEX]}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.filler if index == FILLER else self.dataset[index]

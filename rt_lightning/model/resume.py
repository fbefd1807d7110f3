"""``ExactResume``: a resumed run draws the same random numbers as the uninterrupted run would have.

The data order and the position inside an epoch are restored by the data module's ``ResumableLoader``
(``rt_lightning/data/samplers.py``); the weights and optimizer state by Lightning. What a checkpoint does not give back
is torch's global random generator, which LoRA dropout draws from: a resumed run restarts it from ``seed_everything``,
not where the interrupted run had left it, and anything that draws on the way (a DataLoader starting an epoch,
validation, generation) shifts it further. So torch is reseeded before every training batch from (run seed, epoch,
batch, rank): a step's dropout masks depend only on where the step is, never on what ran before. The run seed is saved
in the checkpoint, so a resume with ``seed_everything: true`` (a fresh random seed) keeps the original run's draws.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import lightning as L
import torch


def step_seed(run_seed: int, epoch: int, batch: int, rank: int) -> int:
    """A 63-bit seed for one training batch on one rank (hashed, so nearby steps get unrelated streams)."""
    digest = hashlib.sha256(f"{run_seed}/{epoch}/{batch}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ExactResume(L.Callback):
    """Reseed torch (CPU and every GPU) before each training batch from (run seed, epoch, batch index, rank)."""

    def __init__(self):
        self.run_seed: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.run_seed is None:  # seed_everything exports its seed; a checkpoint's seed replaces it on resume
            self.run_seed = int(os.environ.get("PL_GLOBAL_SEED", 0))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.run_seed, trainer.current_epoch, batch_idx, trainer.global_rank))

    def state_dict(self) -> dict:
        return {"run_seed": self.run_seed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.run_seed = state_dict["run_seed"]

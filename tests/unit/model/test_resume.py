"""``ExactResume``: per-step seeds, so a resumed run draws the dropout masks of the uninterrupted run."""

import torch

from rt_lightning.model.module import ResponseTuningModule
from rt_lightning.model.resume import ExactResume, step_seed


def test_step_seeds_differ_per_step_and_rank_and_repeat_exactly():
    seeds = {step_seed(0, e, b, r) for e in range(3) for b in range(50) for r in range(2)}
    assert len(seeds) == 300 and all(0 <= s < 2 ** 63 for s in seeds)
    assert step_seed(7, 1, 3, 0) == step_seed(7, 1, 3, 0) != step_seed(8, 1, 3, 0)


def test_the_run_seed_travels_in_the_checkpoint():
    callback = ExactResume()
    callback.run_seed = 1234
    resumed = ExactResume()
    resumed.run_seed = 99  # what a resume with seed_everything: true would draw
    resumed.load_state_dict(callback.state_dict())
    assert resumed.run_seed == 1234


def test_every_fit_uses_exact_resume():
    callbacks = ResponseTuningModule(quantize=None).configure_callbacks()
    assert any(isinstance(c, ExactResume) for c in callbacks)


def test_dropout_masks_follow_the_step_not_the_history():
    callback = ExactResume()
    callback.run_seed = 0

    class Trainer:
        current_epoch, global_rank = 1, 0

    callback.on_train_batch_start(Trainer(), None, None, 3)
    first = torch.rand(4)
    torch.rand(100)  # anything drawn in between (validation, a DataLoader starting an epoch)
    callback.on_train_batch_start(Trainer(), None, None, 3)
    assert torch.equal(first, torch.rand(4))

import logging
from types import SimpleNamespace

import pytest

from rt_lightning.data.global_batch import accumulation_for, resolve_accumulation


def test_the_paper_batch_of_64_on_any_number_of_devices():
    assert accumulation_for(64, 8, 1) == 8
    assert accumulation_for(64, 8, 2) == 4
    assert accumulation_for(64, 8, 8) == 1
    assert accumulation_for(64, 4, 16) == 1


@pytest.mark.parametrize("micro, processes", [(8, 3), (8, 16), (5, 1)])
def test_a_batch_that_does_not_divide_is_refused_naming_the_keys(micro, processes):
    with pytest.raises(ValueError, match="data.global_batch_size 64 is not a multiple of data.batch_size"):
        accumulation_for(64, micro, processes)


def trainer(world_size, accumulate=1):
    return SimpleNamespace(world_size=world_size, accumulate_grad_batches=accumulate)


def test_resolving_sets_the_accumulation_and_logs_the_effective_batch(caplog):
    eight_gpus = trainer(8)
    with caplog.at_level(logging.INFO, logger="rt_lightning.data.global_batch"):
        assert resolve_accumulation(eight_gpus, 8, 64) == 64
    assert eight_gpus.accumulate_grad_batches == 1
    assert "Effective batch: 64 examples per optimizer step = micro-batch 8 × 8 process(es) × 1 accumulated" in \
        caplog.text
    one_gpu = trainer(1)
    assert resolve_accumulation(one_gpu, 8, 64) == 64 and one_gpu.accumulate_grad_batches == 8


def test_without_a_global_batch_the_accumulation_is_kept_and_the_batch_grows_with_devices():
    fixed = trainer(8, accumulate=8)
    assert resolve_accumulation(fixed, 8, None) == 512 and fixed.accumulate_grad_batches == 8


def test_a_contradicting_accumulation_is_refused():
    with pytest.raises(ValueError, match="trainer.accumulate_grad_batches 8 contradicts data.global_batch_size 64"):
        resolve_accumulation(trainer(8, accumulate=8), 8, 64)
    agreeing = trainer(2, accumulate=4)
    assert resolve_accumulation(agreeing, 8, 64) == 64

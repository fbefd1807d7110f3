"""The global batch: examples per optimizer step, kept whatever ``trainer.devices`` and ``trainer.num_nodes`` are.

A recipe states the paper's batch once (``data.global_batch_size: 64``) and the micro-batch that fits a device
(``data.batch_size: 8``); gradient accumulation is derived at start-up from the number of data-parallel processes:
64 = 8 × 1 device × 8 accumulated, = 8 × 8 devices × 1. A fixed ``accumulate_grad_batches`` would multiply the
global batch by the device count instead (8 GPUs would train at 512).
"""

from __future__ import annotations

import logging
from typing import Optional

log = logging.getLogger(__name__)


def accumulation_for(global_batch: int, micro_batch: int, processes: int) -> int:
    """Micro-batches to accumulate so that ``micro_batch × processes × k == global_batch``; refuses a remainder."""
    per_step = micro_batch * processes
    if global_batch <= 0 or global_batch % per_step:
        raise ValueError(f"data.global_batch_size {global_batch} is not a multiple of data.batch_size {micro_batch} "
                         f"× {processes} process(es) = {per_step}: choose a data.batch_size and trainer.devices × "
                         "trainer.num_nodes whose product divides it, or set data.global_batch_size null to use "
                         "trainer.accumulate_grad_batches as given")
    return global_batch // per_step


def resolve_accumulation(trainer, micro_batch: int, global_batch: Optional[int]) -> int:
    """Set ``trainer.accumulate_grad_batches`` for ``global_batch`` (if given), log the effective batch, return it."""
    processes = trainer.world_size
    given = trainer.accumulate_grad_batches
    if global_batch is not None:
        needed = accumulation_for(global_batch, micro_batch, processes)
        if given not in (1, needed):
            raise ValueError(f"trainer.accumulate_grad_batches {given} contradicts data.global_batch_size "
                             f"{global_batch} (which needs {needed} with data.batch_size {micro_batch} × {processes} "
                             "process(es)): remove one of them")
        trainer.accumulate_grad_batches = needed
    accumulate = trainer.accumulate_grad_batches
    effective = micro_batch * processes * accumulate
    log.info("Effective batch: %d examples per optimizer step = micro-batch %d × %d process(es) × %d accumulated",
             effective, micro_batch, processes, accumulate)
    return effective

"""The optimiser step on one device or many: which AdamW steps the adapter, the loss normalised by the trained
tokens of the whole accumulated global batch, and gradient-norm clipping that is right under every strategy.

* **Optimiser.** The paper's ``paged_adamw_32bit`` is bitsandbytes' ``PagedAdamW32bit``. It cannot step sharded
  parameters: FSDP2's DTensors have no sharding rule for ``bitsandbytes.optimizer_update_32bit`` (``step()`` raises
  ``NotImplementedError``), and its paged state would be sized to the full shape. Under FSDP1 and FSDP2 the adapter
  is therefore stepped by ``torch.optim.AdamW`` on each rank's shard (same update rule; the state is sharded with
  the weights, which is what paging saved memory for). On CPU, where paged memory does not exist, the same.
* **Normalisation.** Each micro-batch returns its *summed* token loss; once the window of accumulated micro-batches
  is complete, the gradients are divided by the trained tokens of the whole window on all ranks. The step is then the
  token-weighted mean over the global batch, as one batch of that size on one device would give, however unevenly
  the tokens fall across micro-batches and ranks (the bug transformers fixed in 4.46, huggingface/transformers#34191).
  ``micro_batch`` keeps the older mean of per-micro-batch means, to match runs made with it.
* **Clipping.** Lightning refuses norm clipping under FSDP1 (``torch.nn.utils.clip_grad_norm_`` would see only the
  local shards); FSDP1's root module has its own ``clip_grad_norm_``, which reduces the norm over all ranks.
  FSDP2's DTensor gradients make ``torch.nn.utils.clip_grad_norm_`` compute the global norm. The norm before clipping
  is logged as ``grad_norm``.
"""

from __future__ import annotations

import logging
import math
from typing import Literal, Optional

import torch

log = logging.getLogger(__name__)
LossNormalization = Literal["global_tokens", "micro_batch"]


def is_sharded(strategy) -> bool:
    """FSDP1 (``FSDPStrategy``) or FSDP2 (``ModelParallelStrategy``)."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


def build_optimizer(requested: str, params: list, lr: float, weight_decay: float, strategy,
                    device: torch.device) -> torch.optim.Optimizer:
    """The optimiser for ``requested`` under ``strategy`` on ``device``; a substitution is logged with its reason."""
    if requested == "paged_adamw_32bit":
        if strategy is not None and is_sharded(strategy):
            log.info("Optimizer: torch.optim.AdamW on each rank's shard instead of paged_adamw_32bit (bitsandbytes' "
                     "optimizer cannot step FSDP-sharded parameters; same update rule, state sharded with the weights)")
        elif device.type == "cuda":
            import bitsandbytes as bnb

            log.info("Optimizer: bitsandbytes PagedAdamW32bit (paged_adamw_32bit)")
            return bnb.optim.PagedAdamW32bit(params, lr=lr, weight_decay=weight_decay)
        else:
            log.info("Optimizer: torch.optim.AdamW instead of paged_adamw_32bit (paged memory needs CUDA; same update "
                     "rule, unpaged state)")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class TokenWindow:
    """Summed loss and trained-token count of the micro-batches accumulated since the last optimiser step."""

    def __init__(self):
        self.loss_sum: Optional[torch.Tensor] = None
        self.tokens = 0

    def add(self, summed: torch.Tensor, count: int) -> None:
        summed = summed.detach().float()
        self.loss_sum = summed if self.loss_sum is None else self.loss_sum + summed
        self.tokens += count

    def close(self, strategy) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss, trained tokens) over the window on all ranks; one all-reduce per optimiser step."""
        if self.loss_sum is None:
            raise RuntimeError("optimizer step without a training batch in its accumulation window")
        both = torch.stack([self.loss_sum, torch.tensor(float(self.tokens), device=self.loss_sum.device)])
        if strategy is not None and strategy.world_size > 1:
            both = strategy.reduce(both, reduce_op="sum")
        self.loss_sum, self.tokens = None, 0
        if both[1] <= 0:
            raise RuntimeError("no trained token in this optimizer step's global batch (every example should carry "
                               "trained tokens; was the data filtered to fillers only?)")
        return both[0] / both[1], both[1]


def scale_gradients(optimizer: torch.optim.Optimizer, factor: float | torch.Tensor) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                param.grad.mul_(factor)


def clip_gradient_norm(strategy, optimizer: torch.optim.Optimizer, max_norm: Optional[float]) -> torch.Tensor:
    """Clip the adapter's gradients to ``max_norm`` (none: measure only); returns the total norm before clipping."""
    from lightning.pytorch.strategies import FSDPStrategy

    limit = math.inf if not max_norm else float(max_norm)
    if isinstance(strategy, FSDPStrategy):
        return strategy.model.clip_grad_norm_(limit)  # the root FSDP unit; every rank calls it
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, limit)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

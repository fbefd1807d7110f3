"""LoRA dropout on CPU with masks drawn in bulk.

PyTorch's CPU dropout draws its Bernoulli mask one element at a time from the global generator (a vectorised MKL path
exists for Intel CPUs only). LoRA applies dropout to the input of every adapted layer, 126 masks per step for
Gemma-3-270M, and on this project's AMD CPU those draws were a large share of a QLoRA step. :class:`BulkDropout` draws
the same kind of mask (keep with probability 1 - p, kept values scaled by 1 / (1 - p) in the input's dtype, exactly
as ``torch.nn.functional.dropout`` scales) from NumPy's PCG64, which fills uniform floats many times faster.

The masks still come from torch's generator: each call takes one 63-bit seed from it, so ``seed_everything`` and
:class:`~rt_lightning.model.resume.ExactResume` (which reseeds torch before every batch) make runs and resumed runs
draw the same masks as before. They are different masks from PyTorch's for the same seed, so a run's loss curve
differs from one made with ``nn.Dropout`` by dropout noise (measured in ``bench/cpu_training.py``).
"""

from __future__ import annotations

import numpy as np
import torch


class BulkDropout(torch.nn.Dropout):
    """``nn.Dropout`` whose CPU training-mode masks come from NumPy's PCG64 seeded from torch's generator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        seed = int(torch.randint(0, 2**63 - 1, (1,)))
        uniform = np.random.Generator(np.random.PCG64(seed)).random(x.numel(), dtype=np.float32)
        keep = torch.from_numpy(uniform >= self.p).view(x.shape)
        # As torch's dropout: the 0/1 mask in the input's dtype, divided by the keep probability, times the input.
        return x * keep.to(x.dtype).div_(1.0 - self.p)


def use_bulk_dropout(model: torch.nn.Module) -> int:
    """Replace the ``nn.Dropout`` modules of ``model``'s LoRA layers by :class:`BulkDropout`; returns how many."""
    count = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is torch.nn.Dropout:
                dropouts[name] = BulkDropout(dropout.p)
                count += 1
    return count

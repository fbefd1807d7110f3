"""Frozen 4-bit weights dequantised once, for speed on CPU.

bitsandbytes dequantises every ``Linear4bit`` weight in every forward, and again in every backward, then runs a plain
dense matmul in the compute dtype. On a CPU that dequantisation costs more than the matmul itself for a small model
(Gemma-3-270M decodes 16 rows with ~130 such layers per step). The base is frozen, so a dense copy made once holds
exactly the values each forward would make: outputs and input gradients are the same arithmetic, only faster. The
cost is memory: 2 bytes per base parameter (bf16) next to the 0.5 of the 4-bit copy, which stays (it is the model's
state; the dense copy is neither a parameter nor a buffer, so it is never saved, moved or sharded).

Only single-process CPU models get it: on a GPU the fused 4-bit kernels are the point of QLoRA, and sharded weights
(FSDP) change under the module between forwards. LoRA stays unmerged (PEFT adds it to the base layer's output), so the
adapter keeps training and generation gives the tokens the training path would give.
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Iterator

import torch

_DENSE = "_rt_dense_weight"


def _linear4bit_class():
    try:  # bitsandbytes is an optional dependency (only 4-bit models need it)
        import bitsandbytes as bnb
    except ImportError:
        return None
    return bnb.nn.Linear4bit


def cpu_linear4bit_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's ``Linear4bit`` layers whose weights are on the CPU in bitsandbytes' training layout."""
    cls = _linear4bit_class()
    if cls is None:
        return []
    return [m for m in model.modules() if isinstance(m, cls) and m.weight.device.type == "cpu"
            # Already repacked for bitsandbytes' own CPU inference kernel: a different layout, left to its forward.
            and not getattr(m.weight.quant_state, "packing_format_for_cpu", False)]


def _dequantize(module: torch.nn.Module) -> torch.Tensor:
    import bitsandbytes.functional as bnbf  # optional dependency, see _linear4bit_class

    quant_state = module.weight.quant_state
    dtype = module.compute_dtype or quant_state.dtype
    # The same call MatMul4Bit's backward makes; the forward's kernel gives bit-identical values (tested).
    return bnbf.dequantize_4bit(module.weight.data, quant_state).to(dtype).detach()


def _dense_forward(self, x: torch.Tensor) -> torch.Tensor:
    dense = getattr(self, _DENSE)
    if x.device != dense.device:  # moved after caching: the 4-bit path is always right
        return type(self).forward(self, x)
    # As Linear4bit.forward: compute in the compute dtype, return the input's dtype.
    bias = None if self.bias is None else self.bias.to(dense.dtype)
    return torch.nn.functional.linear(x.to(dense.dtype), dense, bias).to(x.dtype)


def cache_dequantized(model: torch.nn.Module) -> int:
    """Give each CPU ``Linear4bit`` of ``model`` a dense copy of its (frozen) weight; returns how many got one."""
    count = 0
    for module in cpu_linear4bit_modules(model):
        if module.weight.requires_grad:
            raise ValueError("cache_dequantized: a trainable 4-bit weight would go stale in its dense copy")
        if getattr(module, _DENSE, None) is None:
            setattr(module, _DENSE, _dequantize(module))
            module.forward = types.MethodType(_dense_forward, module)
            count += 1
    return count


def drop_dequantized(model: torch.nn.Module) -> None:
    """Undo :func:`cache_dequantized` (frees the dense copies)."""
    for module in model.modules():
        if getattr(module, _DENSE, None) is not None:
            delattr(module, _DENSE)
            del module.forward  # the instance attribute; the class's forward shows again


def is_dequantized(model: torch.nn.Module) -> bool:
    return any(getattr(m, _DENSE, None) is not None for m in model.modules())


@contextmanager
def dequantized_for_inference(model: torch.nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, CPU 4-bit layers run from dense copies (made here unless the model already has them).

    Yields whether the model runs dense inside the block.
    """
    added = cache_dequantized(model) if enabled and not is_dequantized(model) else 0
    try:
        yield added > 0 or is_dequantized(model)
    finally:
        if added:
            drop_dequantized(model)

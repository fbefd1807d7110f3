"""Buffers that must stay in fp32 whatever the training precision: the rotary frequencies.

Lightning's ``bf16-true`` (any strategy) casts the whole module, buffers included, to bf16, and FSDP1's mixed
precision casts buffers to its ``buffer_dtype`` (bf16 for ``bf16-mixed``). Rounded to bf16, Llama's ``inv_freq``
moves RoPE's phase by whole radians at position 2,048, and HF's rotary module upcasts the *rounded* values to fp32.
The fp32 values are kept when the model is built and put back once the strategy has cast and wrapped it; FSDP1 is
told not to cast buffers (``keep_buffer_dtypes``).
"""

from __future__ import annotations

import torch

from rt_lightning.hub import unwrapped_name

FP32_BUFFER_NAMES = ("inv_freq", "original_inv_freq")


def fp32_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """fp32 copies of the buffers that must stay fp32, by their name without wrapper prefixes."""
    return {unwrapped_name(name): buffer.detach().float().clone() for name, buffer in model.named_buffers()
            if name.rsplit(".", 1)[-1] in FP32_BUFFER_NAMES and buffer.is_floating_point()}


def restore_fp32_buffers(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> int:
    """Put the saved fp32 values back (on each buffer's current device); returns how many were found."""
    restored = 0
    for module_name, module in model.named_modules():
        for key, buffer in list(module._buffers.items()):
            name = unwrapped_name(f"{module_name}.{key}" if module_name else key)
            if buffer is not None and name in saved:
                module._buffers[key] = saved[name].to(buffer.device)
                restored += 1
    return restored


def keep_buffer_dtypes(strategy) -> None:
    """FSDP1: compute in the configured param/reduce dtypes, but leave buffers in their own dtype."""
    import dataclasses

    config = strategy.mixed_precision_config
    if config is not None and config.buffer_dtype is not None:
        strategy.mixed_precision = dataclasses.replace(config, buffer_dtype=None)

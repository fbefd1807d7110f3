"""SDPA that stays finite on left-padded batches, for generation.

A left-padded prompt batch has query rows (the padding positions) that may attend to no key at all. CUDA's
memory-efficient SDPA kernel returns NaN for such rows (pytorch/pytorch#110213; transformers no longer works around
it), the NaN becomes those positions' keys and values in the next layer, and ``0 × NaN`` then spoils every real token
of the row: degenerate text on the GPU from code that is coherent on the CPU. Training never meets this (packed or
right-padded rows always see at least themselves), so only generation switches to this variant: plain SDPA whose
output is zeroed on query rows that see no key. Real tokens never attend to those rows, so nothing else changes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from rt_lightning.hub import unwrap_peft

PADDING_SAFE_SDPA = "sdpa_padding_safe"


def padding_safe_sdpa(module, query, key, value, attention_mask, **kwargs):
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.dim() == 4:
        visible = (attention_mask if attention_mask.dtype == torch.bool
                   else attention_mask > torch.finfo(attention_mask.dtype).min)
        blind = ~visible.any(dim=-1)  # (batch, 1 or heads, queries); output is (batch, queries, heads, dim)
        output = output.masked_fill(blind.transpose(1, 2)[..., None], 0.0)
    return output, weights


AttentionInterface.register(PADDING_SAFE_SDPA, padding_safe_sdpa)
AttentionMaskInterface.register(PADDING_SAFE_SDPA, sdpa_mask)


@contextmanager
def padding_safe_attention(model) -> Iterator[None]:
    """Within the block, a model that uses SDPA uses :func:`padding_safe_sdpa`; other kernels are left alone."""
    base = unwrap_peft(model)
    config = getattr(base, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(base, "set_attn_implementation"):
        yield
        return
    base.set_attn_implementation(PADDING_SAFE_SDPA)
    try:
        yield
    finally:
        base.set_attn_implementation("sdpa")

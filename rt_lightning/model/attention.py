"""Attention kernels for generation: SDPA that stays finite on left-padded batches, eager without KV copies.

A left-padded prompt batch has query rows (the padding positions) that may attend to no key at all. CUDA's
memory-efficient SDPA kernel returns NaN for such rows (pytorch/pytorch#110213; transformers no longer works around
it), the NaN becomes those positions' keys and values in the next layer, and ``0 × NaN`` then spoils every real token
of the row: degenerate text on the GPU from code that is coherent on the CPU. Training never meets this (packed or
right-padded rows always see at least themselves), so only generation switches to this variant: plain SDPA whose
output is zeroed on query rows that see no key. Real tokens never attend to those rows, so nothing else changes.

Eager attention (the quickstart's choice on CPU) gives each query head its own copy of the shared key/value heads
(``repeat_kv``): for Gemma-3-270M's 4 query heads on 1 KV head that copies the whole KV cache 4x per layer per decoded
token, most of the attention time at batch 48. :func:`grouped_eager_attention` multiplies each KV head with its group
of query heads stacked instead: the same dot products in the same kernels, bit-identical (tested), no copy.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from rt_lightning.hub import unwrap_peft

PADDING_SAFE_SDPA = "sdpa_padding_safe"
GROUPED_EAGER = "eager_grouped"
# Model families whose own eager attention is the plain one below (no sinks, no extra terms), so swapping is exact.
_PLAIN_EAGER_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text"}


def padding_safe_sdpa(module, query, key, value, attention_mask, **kwargs):
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.dim() == 4:
        visible = (attention_mask if attention_mask.dtype == torch.bool
                   else attention_mask > torch.finfo(attention_mask.dtype).min)
        blind = ~visible.any(dim=-1)  # (batch, 1 or heads, queries); output is (batch, queries, heads, dim)
        output = output.masked_fill(blind.transpose(1, 2)[..., None], 0.0)
    return output, weights


def grouped_eager_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None,
                            **kwargs):
    """HF's eager attention, in the same order of operations, with query heads stacked per KV head.

    ``query`` is (batch, heads, queries, dim), ``key``/``value`` (batch, kv_heads, keys, dim); query head ``h`` reads
    KV head ``h // groups`` as in ``repeat_kv``, so (batch, kv_heads, groups * queries, dim) @ key^T holds exactly the
    scores eager computes, viewed back to (batch, heads, queries, keys) for the mask and softmax.
    """
    batch, heads, queries, dim = query.shape
    kv_heads = key.shape[1]
    scaling = dim ** -0.5 if scaling is None else scaling
    stacked = query.reshape(batch, kv_heads, heads // kv_heads * queries, dim)
    weights = torch.matmul(stacked, key.transpose(2, 3)).view(batch, heads, queries, -1) * scaling
    if softcap is not None:
        weights = torch.tanh(weights / softcap) * softcap
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights.view(batch, kv_heads, -1, weights.shape[-1]), value).view(batch, heads, queries, -1)
    return output.transpose(1, 2).contiguous(), weights


AttentionInterface.register(PADDING_SAFE_SDPA, padding_safe_sdpa)
AttentionMaskInterface.register(PADDING_SAFE_SDPA, sdpa_mask)
AttentionInterface.register(GROUPED_EAGER, grouped_eager_attention)
AttentionMaskInterface.register(GROUPED_EAGER, eager_mask)


def generation_kernel(config) -> str | None:
    """The kernel generation swaps in for ``config``'s, or None to keep it."""
    implementation = getattr(config, "_attn_implementation", None)
    if implementation == "sdpa":
        return PADDING_SAFE_SDPA
    kv_heads = getattr(config, "num_key_value_heads", None)
    grouped = kv_heads is not None and kv_heads < getattr(config, "num_attention_heads", 0)
    if implementation == "eager" and grouped and getattr(config, "model_type", None) in _PLAIN_EAGER_MODEL_TYPES:
        return GROUPED_EAGER
    return None


@contextmanager
def generation_attention(model) -> Iterator[None]:
    """Within the block, SDPA models use :func:`padding_safe_sdpa` and plain eager models with grouped-query heads
    :func:`grouped_eager_attention`; other kernels are left alone."""
    base = unwrap_peft(model)
    config = getattr(base, "config", None)
    kernel = generation_kernel(config)
    if kernel is None or not hasattr(base, "set_attn_implementation"):
        yield
        return
    original = config._attn_implementation
    base.set_attn_implementation(kernel)
    try:
        yield
    finally:
        base.set_attn_implementation(original)

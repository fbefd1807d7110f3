"""The prompt forward of generation, without paying for padding.

A decode batch is left-padded to its longest prompt. Its prompt forward ("prefill") computes every padded position in
every layer, so a batch of short prompts with one long one costs as if all were long: the quickstart's 48 callback
prompts hold 1,636 tokens but pad to 5,088, and that prefill was a quarter of the callback's time on CPU.

:func:`prefill` instead runs the batch's rows in groups of similar length, each padded only to its own longest row,
and joins the groups' KV caches left-padded to the batch width. Decoding then sees exactly the cache shapes a padded
prefill makes; the padding slots hold zeros instead of the keys/values of pad tokens, and every attention kernel
masks them to weight 0 either way. A row's own positions are computed in a narrower batch, so bf16 rounding may
differ in the last bit (the generation bench reports greedy divergence against the padded path).

Only plain KV caches that keep every prompt position are joined (no sliding-window cropping, no recurrent state);
anything else, or a batch with little padding, takes the padded prefill.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache], torch.Tensor]

MAX_GROUP_ROWS = 16
"""Rows per prefill group at most: wide enough that a group's matmuls stay efficient."""
MIN_LENGTH_RATIO = 0.75
"""A row joins the current group while its length is at least this fraction of the group's longest row."""
MIN_PADDING_SAVED = 0.25
"""Groups are used only when they save at least this fraction of the padded prefill's positions."""


def length_groups(lengths: list[int]) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of ``lengths`` (sorted longest first) to prefill together."""
    groups, start = [], 0
    for row, length in enumerate(lengths):
        if row > start and (length < MIN_LENGTH_RATIO * lengths[start] or row - start >= MAX_GROUP_ROWS):
            groups.append((start, row))
            start = row
    groups.append((start, len(lengths)))
    return groups


def _joinable(cache: DynamicCache, width: int) -> bool:
    """Whether every layer of ``cache`` keeps all ``width`` prompt positions as plain key/value tensors."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    for layer in layers:
        if type(layer) is DynamicSlidingWindowLayer:
            if width > layer.sliding_window - 1:  # it would crop the prompt; the crop is the cache's business
                return False
        elif type(layer) is not DynamicLayer:
            return False
    return True


def _batch_buffer(group_states: torch.Tensor, rows: int, width: int) -> torch.Tensor:
    """Zeros for a layer's keys or values of the whole batch: (rows, heads, width, dim)."""
    _, heads, _, dim = group_states.shape
    return group_states.new_zeros(rows, heads, width, dim)


def prefill(forward: Forward, config, input_ids: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor,
            lengths: list[int]) -> tuple[torch.Tensor, DynamicCache]:
    """Last-position logits (rows, vocab) and the KV cache of a left-padded prompt batch.

    ``lengths`` are the rows' prompt lengths, longest first (the batch is length-sorted); ``forward(input_ids,
    attention, positions, cache)`` runs the model and returns its last-position logits.
    """
    width = input_ids.shape[1]
    cache = DynamicCache(config=config)
    groups = length_groups(lengths)
    padded = sum((stop - start) * max(lengths[start:stop]) for start, stop in groups)
    if len(groups) == 1 or padded > (1 - MIN_PADDING_SAVED) * width * len(lengths) or not _joinable(cache, width):
        return forward(input_ids, attention, positions, cache), cache
    logits, keys, values = [], None, None
    for start, stop in groups:
        group_width = max(lengths[start:stop])
        group_cache = DynamicCache(config=config)
        columns = slice(width - group_width, width)  # left padding: a group's rows all end at the right edge
        logits.append(forward(input_ids[start:stop, columns], attention[start:stop, columns],
                              positions[start:stop, columns], group_cache))
        if keys is None:  # zeros where a row has no prompt position, as the padded prefill's masked slots
            keys = [_batch_buffer(layer.keys, len(lengths), width) for layer in group_cache.layers]
            values = [_batch_buffer(layer.values, len(lengths), width) for layer in group_cache.layers]
        for index, layer in enumerate(group_cache.layers):
            keys[index][start:stop, :, width - group_width:] = layer.keys
            values[index][start:stop, :, width - group_width:] = layer.values
    for index in range(len(cache.layers)):
        cache.update(keys[index], values[index], index)
    return torch.cat(logits), cache

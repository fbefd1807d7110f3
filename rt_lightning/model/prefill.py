"""The prompt forward of generation, without paying for padding or for a prefix every row repeats.

A decode batch is left-padded to its longest prompt. Its prompt forward ("prefill") computes every padded position in
every layer, so a batch of short prompts with one long one costs as if all were long: the quickstart's 48 callback
prompts hold 1,636 tokens but pad to 5,088, and that prefill was a quarter of the callback's time on CPU. In-context
prompts (URIAL: ~1,500 tokens of examples before each instruction) repeat one long prefix in every row, so nearly
all of their prefill computes the same positions again and again.

:func:`prefill` instead computes parts of the batch and joins their KV caches left-padded to the batch width:

* rows that share a prefix of at least ``MIN_SHARED_PREFIX`` tokens: the prefix once, then each run of rows with the
  same remaining length continues from a copy of the prefix's cache (no padding at all);
* otherwise rows in groups of similar length, each padded only to its own longest row.

Decoding then sees exactly the cache shapes a padded prefill makes; the padding slots hold zeros instead of the
keys/values of pad tokens, and every attention kernel masks them to weight 0 either way. Sliding-window layers keep
what the padded prefill would keep (each row's last ``window - 1`` positions, right-aligned). A row's positions are
computed in a batch of another shape, so bf16 rounding may differ in the last bit (the generation bench reports
greedy divergence against the padded path).

Only plain and sliding-window KV layers are joined (no recurrent state, no quantized cache); anything else, or a
batch with little padding and no shared prefix, takes the padded prefill.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache], torch.Tensor]
Part = tuple[slice, torch.Tensor, DynamicCache]
"""The batch rows computed together (consecutive), their last-position logits, and their KV cache."""

MAX_GROUP_ROWS = 16
"""Rows per prefill group at most: wide enough that a group's matmuls stay efficient."""
MIN_LENGTH_RATIO = 0.75
"""A row joins the current group while its length is at least this fraction of the group's longest row."""
MIN_PADDING_SAVED = 0.25
"""Groups are used only when they save at least this fraction of the padded prefill's positions."""
MIN_SHARED_PREFIX = 64
"""Rows whose prompts begin with at least this many identical tokens get that prefix computed once."""


def length_groups(lengths: list[int]) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of ``lengths`` (sorted longest first) to prefill together."""
    groups, start = [], 0
    for row, length in enumerate(lengths):
        if row > start and (length < MIN_LENGTH_RATIO * lengths[start] or row - start >= MAX_GROUP_ROWS):
            groups.append((start, row))
            start = row
    groups.append((start, len(lengths)))
    return groups


def shared_prefix_length(rows: list[torch.Tensor]) -> int:
    """Tokens every row begins with, leaving each row at least one token of its own (its logits come from it)."""
    first = rows[0]
    common = min(len(row) for row in rows) - 1
    for row in rows[1:]:
        differs = (row[:common] != first[:common]).nonzero()
        common = int(differs[0]) if len(differs) else common
    return max(common, 0)


def _joinable(cache: DynamicCache) -> bool:
    """Whether every layer of ``cache`` is a plain or sliding-window key/value layer (which the join knows)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


def prefill(forward: Forward, config, input_ids: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor,
            lengths: list[int]) -> tuple[torch.Tensor, DynamicCache]:
    """Last-position logits (rows, vocab) and the KV cache of a left-padded prompt batch.

    ``lengths`` are the rows' prompt lengths, longest first (the batch is length-sorted); ``forward(input_ids,
    attention, positions, cache)`` runs the model and returns its last-position logits.
    """
    width = input_ids.shape[1]
    cache = DynamicCache(config=config)
    if len(lengths) > 1 and _joinable(cache):
        rows = [input_ids[row, width - length:] for row, length in enumerate(lengths)]
        prefix = shared_prefix_length(rows)
        if prefix >= MIN_SHARED_PREFIX:
            return _join(_shared_prefix_parts(forward, config, rows, prefix), cache, width)
        groups = length_groups(lengths)
        padded = sum((stop - start) * max(lengths[start:stop]) for start, stop in groups)
        if len(groups) > 1 and padded <= (1 - MIN_PADDING_SAVED) * width * len(lengths):
            return _join(_length_group_parts(forward, config, input_ids, attention, positions, lengths, groups),
                         cache, width)
    return forward(input_ids, attention, positions, cache), cache


def _length_group_parts(forward: Forward, config, input_ids, attention, positions, lengths: list[int],
                        groups: list[tuple[int, int]]) -> list[Part]:
    width, parts = input_ids.shape[1], []
    for start, stop in groups:
        group_cache = DynamicCache(config=config)
        columns = slice(width - max(lengths[start:stop]), width)  # left padding: a group's rows end at the right
        logits = forward(input_ids[start:stop, columns], attention[start:stop, columns], positions[start:stop, columns],
                         group_cache)
        parts.append((slice(start, stop), logits, group_cache))
    return parts


def _shared_prefix_parts(forward: Forward, config, rows: list[torch.Tensor], prefix: int) -> list[Part]:
    """The prefix once; then each run of rows with equally long rests (rows come longest first, so equal rests are
    neighbours), continuing from a copy of the prefix's cache: no padding anywhere, so sliding windows see what
    they would see in the padded batch."""
    prefix_cache = DynamicCache(config=config)
    ones = torch.ones(1, prefix, dtype=torch.long, device=rows[0].device)
    forward(rows[0][None, :prefix], ones, torch.arange(prefix, device=ones.device)[None], prefix_cache)
    parts, start = [], 0
    while start < len(rows):
        rest = len(rows[start]) - prefix
        stop = start + 1
        while stop < len(rows) and stop - start < MAX_GROUP_ROWS and len(rows[stop]) - prefix == rest:
            stop += 1
        group_cache = copy.deepcopy(prefix_cache)
        group_cache.batch_repeat_interleave(stop - start)
        ids = torch.stack([row[prefix:] for row in rows[start:stop]])
        mask = torch.ones(stop - start, prefix + rest, dtype=torch.long, device=ids.device)
        group_positions = torch.arange(prefix, prefix + rest, device=ids.device).expand(stop - start, rest)
        parts.append((slice(start, stop), forward(ids, mask, group_positions, group_cache), group_cache))
        start = stop
    return parts


def _join(parts: list[Part], cache: DynamicCache, width: int) -> tuple[torch.Tensor, DynamicCache]:
    """The parts' logits in batch order, and their caches joined into ``cache`` left-padded to ``width``.

    Each part's layer holds its rows' last positions (all of them, or a sliding window's last ``window - 1``), which
    go to the right end of a zeroed full-width buffer; the batch cache's own ``update`` then keeps what it keeps
    after a padded prefill of ``width`` positions (and counts ``width`` positions seen)."""
    rows = parts[-1][0].stop
    logits = torch.empty(rows, parts[0][1].shape[-1], dtype=parts[0][1].dtype, device=parts[0][1].device)
    for index, layer in enumerate(cache.layers):
        keys = values = None
        for part_rows, _, part_cache in parts:
            part = part_cache.layers[index]
            if keys is None:
                keys = part.keys.new_zeros(rows, part.keys.shape[1], width, part.keys.shape[-1])
                values = part.values.new_zeros(rows, part.values.shape[1], width, part.values.shape[-1])
            held = part.keys.shape[-2]
            keys[part_rows, :, width - held:] = part.keys
            values[part_rows, :, width - held:] = part.values
        cache.update(keys, values, index)
    for part_rows, part_logits, _ in parts:
        logits[part_rows] = part_logits
    return logits, cache

"""Rendered text + trainable character spans → ``input_ids`` and ``labels`` (``IGNORE_INDEX`` outside the spans).

Rules: the full text is tokenised once, as the paper's code does (TRL's SFTTrainer); a token is trained when its
characters lie inside a trainable span; exactly one BOS leads when the tokenizer uses one; truncation keeps the head;
an example left with no trainable token is an error naming its row (or a counted skip). Special-token text inside the
data (a response that quotes ``</s>``) stays plain text: only the template's own special tokens (its EOS, a chat
template's turn markers) become special ids. An example whose data holds such text is tokenised piecewise, the data
pieces with ``split_special_tokens``; every other example keeps the one-pass tokenisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from rt_lightning.constants import IGNORE_INDEX
from rt_lightning.data.records import DataError
from rt_lightning.data.templates import Rendered

log = logging.getLogger(__name__)


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer(text)`` puts a BOS first by default (Llama, Gemma: yes; GPT-2, Qwen: no)."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    split_at_boundary: bool = False
    """True when a token straddled a span edge and the text was tokenised piecewise at that edge instead."""
    special_text_in_data: bool = False
    """True when the data held special-token text (e.g. ``</s>``), tokenised as plain text."""


def _labels_from_offsets(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], ids: Sequence[int]):
    labels = []
    for token_id, (start, end) in zip(ids, offsets):
        inside = any(s <= start and end <= e and end > start for s, e in spans)
        labels.append(token_id if inside else IGNORE_INDEX)
    return labels


def _straddles(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> bool:
    edges = {edge for span in spans for edge in span}
    return any(start < edge < end for start, end in offsets for edge in edges)


def _special_in_data(ids: Sequence[int], offsets: Sequence[tuple[int, int]], data: Sequence[tuple[int, int]],
                     special_ids: set[int]) -> bool:
    """Whether a special token was cut from the data's own characters (not from the template's)."""
    return any(token_id in special_ids and start < e and s < end
               for token_id, (start, end) in zip(ids, offsets) for s, e in data)


def _piecewise(tokenizer, rendered: Rendered, protect_data: bool):
    """Tokenise the text in pieces cut at every span edge, so each token lies wholly inside or outside a span; with
    ``protect_data``, cut at the data's edges too and tokenise data pieces without parsing special tokens."""
    data = rendered.data if protect_data else ()
    edges = sorted({0, len(rendered.text), *(e for span in (*rendered.spans, *data) for e in span)})
    ids, offsets = [], []
    for start, end in zip(edges, edges[1:]):
        in_data = any(s <= start and end <= e for s, e in data)
        enc = tokenizer(rendered.text[start:end], add_special_tokens=False, return_offsets_mapping=True,
                        split_special_tokens=in_data)
        ids += enc["input_ids"]
        offsets += [(start + a, start + b) for a, b in enc["offset_mapping"]]
    return ids, offsets


def tokenize_batch(tokenizer, rendered: Sequence[Rendered], add_bos: bool) -> list[Tokenized]:
    """Tokenise many rendered examples at once (the fast tokenizer batches in Rust)."""
    encodings = tokenizer([r.text for r in rendered], add_special_tokens=False, return_offsets_mapping=True)
    bos_id, bos_text = tokenizer.bos_token_id, tokenizer.bos_token
    special_ids = set(tokenizer.all_special_ids)
    out = []
    for r, ids, offsets in zip(rendered, encodings["input_ids"], encodings["offset_mapping"]):
        protect = _special_in_data(ids, offsets, r.data, special_ids)
        split = _straddles(offsets, r.spans)
        if split or protect:
            ids, offsets = _piecewise(tokenizer, r, protect)
        labels = _labels_from_offsets(offsets, r.spans, ids)
        if add_bos and not (bos_text and r.text.startswith(bos_text)):
            ids, labels = [bos_id, *ids], [IGNORE_INDEX, *labels]
        out.append(Tokenized(list(ids), labels, split, protect))
    return out


def truncate_and_check(example: Tokenized, max_length: int, where: str, bos_token_id: int | None) -> Tokenized:
    """Keep the first ``max_length`` tokens; refuse examples with nothing to learn or a doubled BOS."""
    if bos_token_id is not None and example.input_ids[:2] == [bos_token_id, bos_token_id]:
        raise DataError(f"{where}: two BOS tokens at the start (the template already adds one; set add_bos: false)")
    ids, labels = example.input_ids[:max_length], example.labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        total = sum(label != IGNORE_INDEX for label in example.labels)
        reason = (f"all {total} trainable tokens lie beyond max_length={max_length}" if total
                  else "the template marked no trainable text")
        raise DataError(f"{where}: no trainable tokens ({reason})")
    return Tokenized(ids, labels, example.split_at_boundary, example.special_text_in_data)

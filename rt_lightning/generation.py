"""One batched generation engine for the validation callback, ``eval`` and ``predict``.

Prompts are tokenised exactly as training data is (BOS rule of ``tokenize.py``), sorted by length so each batch
pads little, left-padded (decoder-only models continue from the right edge), decoded with the KV cache, greedy by
default. A row finishes on EOS, on a stop string, or at ``max_new_tokens``; the reason is reported per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from rt_lightning.data.tokenize import tokenizer_adds_bos


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    """New tokens per prompt at most (the paper: 2,048)."""
    batch_size: int = 16
    """Prompts per forward batch (after sorting by length)."""
    do_sample: bool = False
    """Greedy (the paper) unless true."""
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    """Seeds sampling, so sampled runs repeat too."""
    stop_strings: list[str] = field(default_factory=list)
    """Generation stops at the first of these; it is cut from the text."""
    max_prompt_tokens: Optional[int] = None
    """Keep only the last this-many prompt tokens (long contextual prompts); null keeps all."""


@dataclass
class Generation:
    text: str
    finish_reason: str
    """``eos`` (the model stopped), ``stop`` (a stop string), or ``length`` (hit ``max_new_tokens``)."""
    num_tokens: int
    prompt_tokens: int


def encode_prompts(tokenizer, prompts: Sequence[str], max_prompt_tokens: Optional[int] = None) -> list[list[int]]:
    add_bos = tokenizer_adds_bos(tokenizer)
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if add_bos else []
    out = []
    for prompt, row in zip(prompts, ids):
        row = row if (not add_bos or prompt.startswith(tokenizer.bos_token or "\0")) else bos + row
        out.append(row[-max_prompt_tokens:] if max_prompt_tokens else row)
    return out


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    positions = [text.find(s) for s in stops if s and s in text]
    return (text[: min(positions)], True) if positions else (text, False)


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], config: GenerationConfig = GenerationConfig(),
             on_batch: Optional[Callable[[list[int], list[Generation]], None]] = None,
             synced_gpus: bool = False) -> list[Generation]:
    """Generate for every prompt; ``on_batch(indices, generations)`` is called as each batch finishes.

    ``synced_gpus``: keep decoding until every rank is done (sharded models gather weights in each forward, so all
    ranks must run the same number of forwards); callers must also give every rank the same number of prompts.
    """
    was_training = model.training
    model.eval()
    device = next(p.device for p in model.parameters())
    encoded = encode_prompts(tokenizer, prompts, config.max_prompt_tokens)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # longest first: OOM shows up at once
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    results: list[Optional[Generation]] = [None] * len(prompts)
    try:
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            width = max(len(encoded[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, width - len(encoded[i]):] = torch.as_tensor(encoded[i])
                attention[row, width - len(encoded[i]):] = 1
            if config.do_sample:
                torch.manual_seed(config.seed + start)
            kwargs = dict(do_sample=config.do_sample, max_new_tokens=config.max_new_tokens, eos_token_id=eos_ids,
                          pad_token_id=pad_id, use_cache=True, synced_gpus=synced_gpus)
            if config.do_sample:
                kwargs.update(temperature=config.temperature, top_p=config.top_p)
            else:  # explicit, so a model's generation_config (e.g. sampling defaults) cannot turn greedy off
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if config.stop_strings:
                kwargs.update(stop_strings=config.stop_strings, tokenizer=tokenizer)
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
            new_tokens = output[:, width:].tolist()
            finished = []
            for row, i in enumerate(batch):
                tokens = new_tokens[row]
                ended = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
                kept = tokens if ended is None else tokens[:ended]
                if ended is None and pad_id not in eos_ids:
                    # A row stopped by a stop string is filled with padding while the others go on: not its tokens.
                    while kept and kept[-1] == pad_id:
                        kept = kept[:-1]
                text, stopped = _cut_at_stop(tokenizer.decode(kept, skip_special_tokens=True), config.stop_strings)
                reason = "eos" if ended is not None else "stop" if stopped else "length"
                results[i] = Generation(text, reason, len(kept), len(encoded[i]))
                finished.append(results[i])
            if on_batch is not None:
                on_batch(batch, finished)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _eos_ids(model, tokenizer) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids = [tokenizer.eos_token_id, *ids]
    return ids

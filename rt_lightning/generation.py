"""One batched generation engine for the validation callback, ``eval`` and ``predict``.

Prompts are tokenised exactly as training data is (BOS rule of ``tokenize.py``), sorted by length so each batch
pads little, left-padded (decoder-only models continue from the right edge), and decoded with a KV cache, greedy by
default. A row finishes on EOS, on a stop string, or at ``max_new_tokens``; the reason is reported per row.

The decode loop is ours rather than HF ``generate`` so that finished rows leave the batch at once (their KV-cache
rows are dropped): a batch costs what its live rows cost, not what its longest row costs; and the prompts are
prefilled in groups of similar length, or from a prefix they all share computed once
(:mod:`rt_lightning.model.prefill`), so a batch's prompt forward costs what its prompts hold, not what its padding or
a repeated prefix holds. Attention runs through :mod:`rt_lightning.model.attention` (finite on left padding, where
CUDA SDPA gives NaN; no KV-cache copies for grouped-query heads under eager attention), and non-finite logits stop
generation with an error instead of becoming degenerate text.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from rt_lightning.data.tokenize import tokenizer_adds_bos
from rt_lightning.hub import unwrap_peft
from rt_lightning.model.attention import generation_attention
from rt_lightning.model.dense4bit import dequantized_for_inference
from rt_lightning.model.fused_siblings import fused_for_inference
from rt_lightning.model.packed_linear import PackingBudget, packed_for_inference
from rt_lightning.model.prefill import prefill


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
    dequantize_4bit: bool = True
    """On CPU, run 4-bit layers from dense copies made once per call: the same values bitsandbytes makes in every
    forward, so the same tokens, faster (1.6x on the quickstart's callback); 2 bytes per base parameter meanwhile."""
    pack_weights: bool = True
    """On CPU, run bf16 linear layers from weights reordered once for oneDNN, and projections of one input (q/k/v,
    gate/up) as one product: the same values (checked at set-up), faster (Gemma's 262k-token head 1.6x; the
    ``eval`` command's generation ~1.3x); one more bf16 copy of each packed weight meanwhile."""


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


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first of ``stops`` it contains."""
    positions = [text.find(s) for s in stops if s and s in text]
    return text[: min(positions)] if positions else text


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], config: GenerationConfig = GenerationConfig(),
             on_batch: Optional[Callable[[list[int], list[Generation]], None]] = None,
             synced_gpus: bool = False) -> list[Generation]:
    """Generate for every prompt; ``on_batch(indices, generations)`` is called as each batch finishes.

    ``synced_gpus``: sharded models (FSDP) gather weights in every forward, a collective, so every rank must run the
    same number of forwards. A rank that is done keeps running one-token dummy forwards until all ranks are done;
    ranks may hold different numbers of prompts.
    """
    if config.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {config.max_new_tokens}")
    was_training = model.training
    model.eval()
    encoded = encode_prompts(tokenizer, prompts, config.max_prompt_tokens)
    results: list[Optional[Generation]] = [None] * len(prompts)
    # Sharded weights (FSDP) change between forwards, so only a whole single-process model runs dense; and ranks
    # must run the same number of forwards, so prompts are prefilled in one forward per batch there.
    sharded = synced_gpus and torch.distributed.is_initialized()
    decoder = _Decoder(model, tokenizer, config, grouped_prefill=not sharded)
    pack, budget = config.pack_weights and not sharded, PackingBudget()
    try:
        with generation_attention(model), contiguous_head_input(model), \
                dequantized_for_inference(model, config.dequantize_4bit and not sharded), \
                fused_for_inference(model, pack, budget) as fused, \
                packed_for_inference(model, pack, skip=fused, budget=budget):
            steps = decoder.run(encoded, results, on_batch)
            if not synced_gpus or not torch.distributed.is_initialized():
                for _ in steps:
                    pass
            else:
                _run_in_lockstep(steps, decoder.dummy_forward, decoder.device)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


@contextmanager
def contiguous_head_input(model) -> Iterator[None]:
    """Within the block, the LM head gets a contiguous input.

    HF models slice the last position out of the prompt's hidden states (``logits_to_keep``), a strided view; on CPU
    ``linear`` on a strided 3-D bf16 input takes a path that copies the weight per row: 46 s instead of 0.1 s (measured,
    one thread) for Gemma's 262k-token head on 16 rows, with the same values. The prompt forward cost more than all
    the decoding steps after it.
    """
    head = unwrap_peft(model).get_output_embeddings()
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def _run_in_lockstep(steps: Iterator[None], dummy_forward: Callable[[], None], device: torch.device) -> None:
    """Each round every rank runs exactly one forward (a real one, or a dummy once its prompts are done)."""
    flag = torch.zeros(1, device=device)
    while True:
        busy = next(steps, StopIteration) is not StopIteration
        if not busy:
            dummy_forward()
        flag.fill_(float(busy))
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if not flag.item():
            return


class _Decoder:
    def __init__(self, model, tokenizer, config: GenerationConfig, grouped_prefill: bool = True):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.grouped_prefill = grouped_prefill
        self.device = next(p.device for p in model.parameters())
        self.eos_ids = _eos_ids(model, tokenizer)
        # transformers renamed ``past_key_values`` to ``cache`` (and warns on the old name); older versions lack it.
        self.cache_kwarg = "cache" if "cache" in inspect.signature(unwrap_peft(model).forward).parameters \
            else "past_key_values"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        # A stop string ends within the last few tokens; decoding only that tail keeps each check O(1).
        self.stop_window = 4 * max(map(len, config.stop_strings), default=0) + 8
        self.warpers = LogitsProcessorList(
            ([TemperatureLogitsWarper(config.temperature)] if config.temperature != 1.0 else [])
            + ([TopPLogitsWarper(config.top_p)] if config.top_p < 1.0 else []))

    def run(self, encoded: list[list[int]], results: list, on_batch) -> Iterator[None]:
        """Decode every batch; yields once after each model forward (so a caller can keep ranks in step)."""
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # longest first: OOM shows up at once
        for start in range(0, len(order), self.config.batch_size):
            batch = order[start:start + self.config.batch_size]
            generator = torch.Generator(self.device).manual_seed(self.config.seed + start)
            outputs: dict[int, Generation] = {}
            yield from self._decode_batch([encoded[i] for i in batch], generator, outputs)
            finished = [outputs[row] for row in range(len(batch))]
            for i, generation in zip(batch, finished):
                results[i] = generation
            if on_batch is not None:
                on_batch(batch, finished)

    def _decode_batch(self, rows: list[list[int]], generator: torch.Generator,
                      outputs: dict[int, Generation]) -> Iterator[None]:
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, width - len(ids):] = torch.as_tensor(ids)
            attention[row, width - len(ids):] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        if self.grouped_prefill:
            logits, cache = prefill(self._forward, self.model.config, input_ids, attention, positions,
                                    list(map(len, rows)))
        else:
            cache = DynamicCache(config=self.model.config)
            logits = self._forward(input_ids, attention, positions, cache)
        live = list(range(len(rows)))  # batch row -> original row, for the rows still decoding
        tokens: list[list[int]] = [[] for _ in rows]
        while True:
            yield
            next_ids, finite = self._pick(logits, generator)
            # One host transfer per step carries both the tokens and the finiteness check.
            picked, finite = torch.stack([next_ids, finite.long()]).tolist()
            if not all(finite):
                bad = [live[slot] for slot, ok in enumerate(finite) if not ok]
                raise FloatingPointError(
                    f"Non-finite logits while generating (rows {bad} of a length-sorted batch of {len(rows)}, after "
                    f"{len(tokens[bad[0]])} new tokens); refusing to return degenerate text. Check the model's dtype "
                    "(Gemma overflows in float16) and its attention kernel.")
            keep = []
            for slot, (row, token) in enumerate(zip(live, picked)):
                reason = self._finish_reason(tokens[row], token)
                if reason == "eos":
                    outputs[row] = self._result(tokens[row], "eos", len(rows[row]))
                    continue
                tokens[row].append(token)
                if reason is not None:
                    outputs[row] = self._result(tokens[row], reason, len(rows[row]))
                else:
                    keep.append(slot)
            if not keep:
                return
            if len(keep) < len(live):  # early exit: finished rows leave the batch and the cache
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                attention, positions, next_ids = attention[index], positions[index], next_ids[index]
                live = [live[slot] for slot in keep]
            input_ids = next_ids[:, None]
            attention = torch.cat([attention, attention.new_ones(len(live), 1)], dim=1)
            positions = positions[:, -1:] + 1
            logits = self._forward(input_ids, attention, positions, cache)

    def _forward(self, input_ids: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor,
                 cache: DynamicCache) -> torch.Tensor:
        """The model's next-token logits (rows, vocab), extending ``cache``."""
        return self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                          logits_to_keep=1, **{self.cache_kwarg: cache}).logits[:, -1, :]

    def _pick(self, logits: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Next token per row, and whether the row's logits are all finite.

        Greedy reads the logits in their own dtype: an fp32 copy holds the same values, so the same first maximum,
        and skipping it (and a full ``isfinite``) saves ~65 ms per step at batch 48 over Gemma's 262k-token vocabulary
        on CPU. ``max`` propagates NaN and +inf, ``amin`` shows -inf: together they check every logit.
        """
        lowest = logits.amin(-1)
        if not self.config.do_sample:
            highest, next_ids = logits.max(-1)
            return next_ids, torch.isfinite(lowest) & torch.isfinite(highest)
        logits = logits.float()
        finite = torch.isfinite(lowest) & torch.isfinite(logits.amax(-1))
        # A spoilt row samples from zeros instead, so the caller reports it rather than ``multinomial`` failing.
        logits = torch.where(finite[:, None], logits, 0.0)
        probs = torch.softmax(self.warpers(None, logits), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1), finite

    def _finish_reason(self, tokens: list[int], token: int) -> Optional[str]:
        """Why the row ends with ``token`` appended, or None if it goes on."""
        if token in self.eos_ids:
            return "eos"
        if self.config.stop_strings:
            tail = self.tokenizer.decode(tokens[-self.stop_window:] + [token], skip_special_tokens=True)
            if any(s and s in tail for s in self.config.stop_strings):
                return "stop"
        return "length" if len(tokens) + 1 >= self.config.max_new_tokens else None

    def _result(self, tokens: list[int], reason: str, prompt_tokens: int) -> Generation:
        text = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), self.config.stop_strings)
        return Generation(text, reason, len(tokens), prompt_tokens)

    def dummy_forward(self) -> None:
        self.model(input_ids=torch.full((1, 1), self.pad_id, device=self.device), use_cache=False, logits_to_keep=1)


def _eos_ids(model, tokenizer) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids = [tokenizer.eos_token_id, *ids]
    return ids

"""Generation throughput: rt_lightning's engine vs HF ``generate`` batched (unsorted) vs one prompt at a time.

Same model, same prompts, same greedy settings, in one run. Prints a table and ends with one JSON line.
    python bench/generation.py                                  # Gemma-3-270M base on CPU, 16 prompts
    python bench/generation.py --device cuda --num_prompts 64 --max_new_tokens 256 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rt_lightning.data.records import load_records
from rt_lightning.data.datamodule import QUICKSTART_DIR
from rt_lightning.data.templates import tulu
from rt_lightning.generation import GenerationConfig, encode_prompts, generate
from rt_lightning.model.loading import EMBEDDED_GEMMA, load_causal_lm, load_tokenizer


def hf_batched(model, tokenizer, prompts, max_new_tokens, batch_size):
    """The plain way: batches in the given order, left padding, HF generate."""
    new_tokens, device = 0, next(model.parameters()).device
    encoded = encode_prompts(tokenizer, prompts)
    for start in range(0, len(prompts), batch_size):
        chunk = encoded[start:start + batch_size]
        width = max(map(len, chunk))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(c)) + c for c in chunk], device=device)
        mask = (torch.arange(width, device=device)[None] >= torch.tensor([width - len(c) for c in chunk],
                                                                           device=device)[:, None]).long()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row in out[:, width:].tolist():
            new_tokens += next((k for k, t in enumerate(row) if t == tokenizer.eos_token_id), len(row))
    return new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_GEMMA)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--num_prompts", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, args.quantize, getattr(torch, args.dtype),
                           device_map={"": args.device} if args.quantize else None)
    if not args.quantize:
        model = model.to(args.device)
    model.eval()
    records = load_records(str(QUICKSTART_DIR / "train.jsonl"))
    template = tulu(tokenizer.eos_token)
    prompts = [template.prompt(r.instruction) for r in records][: args.num_prompts]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    generate(model, tokenizer, prompts[:2], GenerationConfig(max_new_tokens=4))  # warm-up

    def timed(fn):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return {"new_tokens": tokens, "seconds": round(seconds, 3), "tokens_per_second": round(tokens / seconds, 1)}

    results = {
        "engine": timed(lambda: sum(g.num_tokens for g in generate(model, tokenizer, prompts, config))),
        "hf_batched_unsorted": timed(lambda: hf_batched(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)),
        "hf_one_at_a_time": timed(lambda: sum(g.num_tokens for p in prompts
                                              for g in generate(model, tokenizer, [p], config))),
    }
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.model} on {device}, {len(prompts)} prompts, greedy, {args.max_new_tokens} new tokens max, "
          f"batch {args.batch_size}")
    for name, r in results.items():
        print(f"  {name:22s} {r['tokens_per_second']:9.1f} new tokens/s  ({r['new_tokens']} tokens, {r['seconds']} s)")
    print(json.dumps({"bench": "generation", "device": device, "model": args.model, **results}))


if __name__ == "__main__":
    main()

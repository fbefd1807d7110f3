"""Generation throughput: rt_lightning's engine vs HF ``generate`` (sorted batches, unsorted batches, one at a time).

Same model, prompts, greedy settings and stop strings, in one run. The engine sorts prompts by length and drops rows
from the batch as they finish; ``hf_batched_sorted`` uses the same batches, so the gap between the two is the early
exit. By default generation stops at the template's next turn (``\\n<|``), so rows end at different steps, as they do
in real evaluations. Prints a table and ends with one JSON line.
    python bench/generation.py                                  # Gemma-3-270M base on CPU, 16 prompts
    python bench/generation.py --device cuda --num_prompts 64 --max_new_tokens 256
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rt_lightning.data.datamodule import QUICKSTART_DIR
from rt_lightning.data.records import load_records
from rt_lightning.data.templates import tulu
from rt_lightning.generation import GenerationConfig, cut_at_stop, encode_prompts, generate
from rt_lightning.hub import EMBEDDED_GEMMA, load_causal_lm, load_tokenizer


def hf_generate(model, tokenizer, prompts, args, sort: bool, batch_size: int) -> tuple[int, list[str]]:
    """The plain way: left padding, HF ``generate``; returns new tokens and the texts in prompt order."""
    device = next(model.parameters()).device
    encoded = encode_prompts(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i])) if sort else list(range(len(prompts)))
    texts, new_tokens = [""] * len(prompts), 0
    stops = dict(stop_strings=args.stop, tokenizer=tokenizer) if args.stop else {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(encoded[i])) + encoded[i] for i in chunk])
        mask = (ids != tokenizer.pad_token_id).long()
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **stops)
        for i, row in zip(chunk, out[:, width:].tolist()):
            end = next((k for k, t in enumerate(row) if t in (tokenizer.eos_token_id, tokenizer.pad_token_id)), len(row))
            new_tokens += end
            texts[i] = cut_at_stop(tokenizer.decode(row[:end], skip_special_tokens=True), args.stop)
    return new_tokens, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_GEMMA)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--num_prompts", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--stop", nargs="*", default=["\n<|"], help="stop strings (none: every row runs to the limit)")
    parser.add_argument("--skip_one_at_a_time", action="store_true", help="skip the slowest baseline")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, args.quantize, getattr(torch, args.dtype),
                           device_map={"": args.device} if args.quantize else None)
    if not args.quantize:
        model = model.to(args.device)
    model.eval()
    records = load_records(str(QUICKSTART_DIR / "train.jsonl"))
    prompts = [tulu(tokenizer.eos_token).prompt(r.instruction) for r in records][: args.num_prompts]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop_strings=args.stop)
    generate(model, tokenizer, prompts[:2], GenerationConfig(max_new_tokens=4))  # warm-up

    def timed(fn):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens, texts = fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return {"new_tokens": tokens, "seconds": round(seconds, 3),
                "tokens_per_second": round(tokens / seconds, 1)}, texts

    def engine():
        generations = generate(model, tokenizer, prompts, config)
        return sum(g.num_tokens for g in generations), [g.text for g in generations]

    runs = {"engine": engine,
            "hf_batched_sorted": lambda: hf_generate(model, tokenizer, prompts, args, True, args.batch_size),
            "hf_batched_unsorted": lambda: hf_generate(model, tokenizer, prompts, args, False, args.batch_size)}
    if not args.skip_one_at_a_time:
        runs["hf_one_at_a_time"] = lambda: hf_generate(model, tokenizer, prompts, args, False, 1)
    results, texts = {}, {}
    for name, fn in runs.items():
        results[name], texts[name] = timed(fn)
    # Same greedy text is the sanity check (bf16 batches of other shapes may flip a near-tie now and then).
    agree = {name: sum(a == b for a, b in zip(texts["engine"], t)) / len(prompts) for name, t in texts.items()}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.model} on {device}, {len(prompts)} prompts, greedy, {args.max_new_tokens} new tokens max, "
          f"batch {args.batch_size}, stop strings {args.stop}")
    for name, r in results.items():
        print(f"  {name:22s} {r['tokens_per_second']:9.1f} new tokens/s  ({r['new_tokens']} tokens, {r['seconds']} s;"
              f" same text as engine: {agree[name]:.0%})")
    print(json.dumps({"bench": "generation", "device": device, "model": args.model, "stop": args.stop,
                      **results, "text_agreement_with_engine": agree}))


if __name__ == "__main__":
    main()

"""Training throughput: rt_lightning (Lightning, packed and padded) vs TRL's ``SFTTrainer``, in one run.

Same model and quantisation, same token sequences and trained positions (TRL gets our tokenised examples as
``input_ids`` + ``completion_mask``), same LoRA and its initialisation, same optimiser (AdamW, constant lr, same
clipping), same micro-batch, same example order (no shuffling). TRL runs with its default padded collator (no packing,
no padding_free), the way users would otherwise train. Each run is its own subprocess (peak memory is per run), and
frameworks alternate within rounds (ABC, BCA, ...) so drift in machine speed hits all alike.

    python bench/train_throughput.py --steps 8 --threads 1   # Gemma-3-270M nf4 on CPU, LIMA subset (~18 min, 2 cores)
    # exactness check (fp32, no quantisation): the curves agree to ~1e-5
    python bench/train_throughput.py --quantize none --dtype float32 --batch_size 2 --max_length 256 --steps 4
    python bench/train_throughput.py --random_config tiny --steps 6      # 2-layer random Llama: a smoke test
    python bench/train_throughput.py --device cuda --random_config llama-3.2-1b --batch_size 8 --max_length 2048
--random_config NAME builds a model of that architecture's shape with *random* weights (speed does not depend on the
weights) in a temporary folder, with rt_lightning's tiny byte-level tokenizer (ids fit any vocabulary); the folder is
deleted afterwards. Add ``--frameworks rt_packed,trl,trl_shipped`` to also time TRL with its own QLoRA defaults
(bf16 adapter, bf16 autocast, gradient checkpointing): faster or slower, but no longer the same arithmetic.
In bf16 (the default) the curves agree to a few 1e-3: padded and packed batches round differently, and that noise
floor is printed as ``rt_packed-rt_padded``. On a shared CPU pass ``--threads 1``: with other jobs on the cores, torch's
2-thread kernels stall on every op (25x slower elementwise ops were seen). Ends with one JSON line holding all
figures. No timed asserts: it reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from rt_lightning.hub import EMBEDDED_GEMMA

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WORKER = Path(__file__).resolve().parent / "_throughput_worker.py"
# Published shapes (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings) of real models.
SHAPES = {
    "llama-3.2-1b": (2048, 8192, 16, 32, 8, 128256, True),
    "llama-3.2-3b": (3072, 8192, 28, 24, 8, 128256, True),
    "llama-3.1-8b": (4096, 14336, 32, 32, 8, 128256, False),
}


def save_random_model(name: str, folder: str) -> str:
    """A model of a real architecture's shape with random bf16 weights, plus a tokenizer whose ids fit its vocab."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rt_lightning.testing import save_tiny_model, tiny_tokenizer

    if name == "tiny":
        return save_tiny_model(folder)
    hidden, inter, layers, heads, kv, vocab, tied = SHAPES[name]
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                         tie_word_embeddings=tied, max_position_embeddings=131072,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM._from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_worker(settings: dict, timeout: int) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(WORKER), json.dumps(settings)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{settings['framework']} run failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def max_diff(a: list[float], b: list[float]) -> float:
    return round(max(abs(x - y) for x, y in zip(a, b)), 6)


def summarise(runs: list[dict]) -> dict:
    """Pool all rounds of one framework; each round's first step (start-up, first-call kernels) is left out."""
    tokens = sum(sum(r["tokens"][1:]) for r in runs)
    seconds = sum(sum(r["times"][1:]) for r in runs)
    steps = [t for r in runs for t in r["times"][1:]]
    curves = [r["losses"] for r in runs]
    return {
        "trainable_tokens_per_s": round(tokens / seconds, 1), "median_step_s": round(statistics.median(steps), 3),
        "timed_steps": len(steps), "timed_tokens": tokens, "timed_seconds": round(seconds, 2),
        "first_step_s": [round(r["times"][0], 2) for r in runs],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "rss_at_train_start_mb": max(r["rss_at_start_mb"] for r in runs),
        "peak_cuda_mb": max((r["peak_cuda_mb"] or 0) for r in runs) or None,
        "losses": [round(x, 6) for x in curves[0]], "tokens_per_step": runs[0]["tokens"],
        # Same framework, same seed: rounds should repeat exactly; a non-zero value is the run-to-run noise floor.
        "loss_round_to_round_max_diff": max([max_diff(curves[0], c) for c in curves[1:]], default=0.0),
        "lora_checksum": runs[0]["lora_checksum"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_GEMMA, help="hub id, local folder or embedded:gemma-3-270m")
    parser.add_argument("--random_config", choices=["tiny", *SHAPES], help="use a random model of this shape instead")
    parser.add_argument("--quantize", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="base weights / 4-bit compute; float32 with --quantize none checks the curves bit-closely")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--data", default=str(SHARED / "lima" / "lima.json"))
    parser.add_argument("--layout", default="lima")
    parser.add_argument("--mode", default="rt")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run (the first is warm-up)")
    parser.add_argument("--max_examples", type=int, help="seeded LIMA subset; default steps * batch_size")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--frameworks", default="rt_packed,rt_padded,trl",
                        help="comma list of rt_packed, rt_padded, trl, trl_shipped")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--lora_alpha", type=int, default=16)
    parser.add_argument("--grad_clip", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient_checkpointing", default="auto", choices=["auto", "on", "off"],
                        help="auto: on for cuda, off for cpu (as configs/quickstart.yaml)")
    parser.add_argument("--attn_implementation", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per run")
    args = parser.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: {args.data} not found")
        return
    frameworks = args.frameworks.split(",")
    cuda = args.device.startswith("cuda")

    with contextlib.ExitStack() as stack:
        model = args.model
        if args.random_config:
            model = save_random_model(args.random_config, stack.enter_context(tempfile.TemporaryDirectory()))
        settings = {
            "model": model, "quantize": None if args.quantize == "none" else args.quantize, "dtype": args.dtype,
            "device": args.device,
            "data": args.data, "layout": args.layout, "mode": args.mode, "batch_size": args.batch_size,
            "max_length": args.max_length, "steps": args.steps,
            "max_examples": args.max_examples or args.steps * args.batch_size, "lr": args.lr, "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha, "grad_clip": args.grad_clip, "seed": args.seed,
            "gradient_checkpointing": {"on": True, "off": False, "auto": cuda}[args.gradient_checkpointing],
            "attn_implementation": args.attn_implementation, "threads": args.threads}
        # Tokenise once here, so every run loads the same cached dataset instead of tokenising inside its timing.
        from rt_lightning.data.datamodule import SFTDataModule

        n = len(SFTDataModule(train=args.data, val=None, layout=args.layout, mode=args.mode, tokenizer=model,
                              max_length=args.max_length, max_examples=settings["max_examples"],
                              seed=args.seed).dataset("train"))
        device = torch.cuda.get_device_name() if cuda else \
            f"CPU ({os.cpu_count()} cores, torch {args.threads or torch.get_num_threads()} threads per run)"
        print(f"{args.random_config or args.model} ({args.quantize}) on {device}: {n} examples, micro-batch "
              f"{args.batch_size}, max_length {args.max_length}, {args.steps} steps x {args.rounds} rounds, "
              f"gradient checkpointing {'on' if settings['gradient_checkpointing'] else 'off'}", flush=True)
        runs = {f: [] for f in frameworks}
        for r in range(args.rounds):
            order = frameworks[r % len(frameworks):] + frameworks[:r % len(frameworks)]
            for framework in order:
                result = run_worker({**settings, "framework": framework}, args.timeout)
                runs[framework].append(result)
                tps = sum(result["tokens"][1:]) / sum(result["times"][1:])
                print(f"  round {r + 1} {framework:11s} {tps:8.1f} trainable tok/s  "
                      f"median step {statistics.median(result['times'][1:]):6.2f} s  peak RSS "
                      f"{result['peak_rss_mb']:.0f} MB", flush=True)

    figures = {f: summarise(rs) for f, rs in runs.items()}
    print(f"\n{'framework':12s} {'tok/s':>9s} {'median step':>12s} {'peak RSS MB':>12s} {'RSS at start':>13s}"
          + (f" {'peak CUDA MB':>13s}" if cuda else ""))
    for f, s in figures.items():
        print(f"{f:12s} {s['trainable_tokens_per_s']:9.1f} {s['median_step_s']:11.3f}s {s['peak_rss_mb']:12.0f} "
              f"{s['rss_at_train_start_mb']:13.0f}" + (f" {s['peak_cuda_mb']:13.0f}" if cuda else ""))

    # Loss curves side by side: same tokens, same init, same optimiser, so they must agree up to float noise.
    print(f"\n{'step':>4s} {'tokens':>7s} " + " ".join(f"{f:>11s}" for f in frameworks))
    for i in range(args.steps):
        print(f"{i + 1:4d} {figures[frameworks[0]]['tokens_per_step'][i]:7d} "
              + " ".join(f"{figures[f]['losses'][i]:11.5f}" for f in frameworks))
    reference = next((f for f in ("trl", "trl_shipped") if f in figures), None)
    ratios, loss_diff = {}, {}
    for f in frameworks:
        if f.startswith("rt_") and reference:
            speed = figures[f]["trainable_tokens_per_s"] / figures[reference]["trainable_tokens_per_s"]
            ratios[f"{f}/{reference}"] = round(speed, 3)
            loss_diff[f"{f}-{reference}"] = max_diff(figures[f]["losses"], figures[reference]["losses"])
    if {"rt_packed", "rt_padded"} <= set(figures):  # packed vs padded in one framework: the float-noise floor
        loss_diff["rt_packed-rt_padded"] = max_diff(figures["rt_packed"]["losses"], figures["rt_padded"]["losses"])
    same_tokens = len({tuple(s["tokens_per_step"]) for s in figures.values()}) == 1
    checksums = [s["lora_checksum"] for f, s in figures.items() if f != "trl_shipped"]
    same_init = max(checksums) - min(checksums) <= 1e-9 * max(abs(c) for c in checksums)
    print(f"\ntokens/s ratios {ratios}; loss-curve max |diff| {loss_diff}; "
          f"same trained tokens per step: {same_tokens}; same LoRA init: {same_init}")
    print(json.dumps({"bench": "train_throughput", "device": device, "model": args.random_config or args.model,
                      "settings": {k: v for k, v in settings.items() if k != "model"}, "rounds": args.rounds,
                      "frameworks": figures, "ratios": ratios, "loss_max_abs_diff": loss_diff,
                      "same_tokens_per_step": same_tokens, "same_lora_init": same_init}))


if __name__ == "__main__":
    main()

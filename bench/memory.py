"""Peak memory of one QLoRA training step (forward, backward, optimiser) through ResponseTuningModule.

A random-weight model of a real shape is saved once to a temporary folder (no hub needed), loaded in 4-bit nf4 with
LoRA r=64 on all linear layers, gradient checkpointing on, and trained on one micro-batch of random tokens.
    python bench/memory.py --shape llama-3.1-8b --batch 8 --seq 2048          # needs a CUDA GPU (goal: fits 24 GB)
    python bench/memory.py --shape tiny --device cpu --batch 2 --seq 128     # smoke test of the code path
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import torch

from rt_lightning.model.module import ResponseTuningModule

SHAPES = {  # public architecture sizes; weights are random
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--quantize", default="nf4")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA GPU here (use --device cpu with --shape tiny for a smoke test)")
        return
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tempfile.mkdtemp(prefix=f"rt-{args.shape}-")
    config = LlamaConfig(max_position_embeddings=max(4096, args.seq), **SHAPES[args.shape])
    with torch.device("cpu"):
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    module = ResponseTuningModule(model=folder, quantize=None if args.quantize == "none" else args.quantize,
                                  lora_r=64, lora_alpha=16, gradient_checkpointing=True)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    module.configure_model()
    if args.quantize == "none":
        module.to(args.device)
    module.train()
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=args.device)
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    start = time.perf_counter()
    loss, count = module.loss(batch)
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    if args.device == "cuda":
        peak, device = torch.cuda.max_memory_allocated() / 2**30, torch.cuda.get_device_name()
    else:
        peak, device = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "CPU (peak RSS)"
    print(f"{args.shape} {args.quantize} batch {args.batch} x {args.seq} on {device}: peak {peak:.2f} GiB, "
          f"step {seconds:.2f} s, loss {loss.item():.3f}")
    print(json.dumps({"bench": "memory", "shape": args.shape, "device": device, "quantize": args.quantize,
                      "batch": args.batch, "seq": args.seq, "peak_gib": round(peak, 3), "step_seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()

"""Part 2 of bench/gpu_suite.py: one training variant per process, so each variant's peak memory is its own.

CUDA's peak counter can be reset between variants, but memory a variant leaves cached or fragmented still moves the
next one's figure, and on the CPU ``ru_maxrss`` is the peak of the whole process. So every variant runs here, in a
fresh interpreter, and prints one JSON line:
    python bench/gpu_suite_training.py --variant rt_qlora --model PATH --device cuda [--dry-run]
Variants: ``rt_qlora`` (ResponseTuningModule: chunked loss, gradient checkpointing), ``hf_peft_qlora`` (plain HF +
PEFT: ``labels=`` loss, ``prepare_model_for_kbit_training``), ``bf16_lora`` (ours, no quantisation).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

VARIANTS = {"rt_qlora": "nf4", "hf_peft_qlora": "nf4", "bf16_lora": None}


def peak_memory_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(variant: str, model_path: str, device: str, r: int):
    """(trainable model, loss function of a batch) for ``variant``, placed on ``device``."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from rt_lightning.hub import load_causal_lm
    from rt_lightning.model.module import ResponseTuningModule

    if variant == "hf_peft_qlora":
        base = load_causal_lm(model_path, quantize="nf4", device_map={"": device})
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)
        model = get_peft_model(base, LoraConfig(r=r, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
        return model, lambda data: model(**data).loss
    module = ResponseTuningModule(model=model_path, quantize=VARIANTS[variant], lora_r=r, lora_alpha=16,
                                  gradient_checkpointing=True, dense_cpu_base=False)
    module.load_device = torch.device(device)  # outside a Trainer: 4-bit weights are quantised on this device
    module.configure_model()
    module.train()
    placed = {str(p.device) for p in module.model.parameters()}
    if placed != {str(torch.device(device, 0) if device == "cuda" else torch.device(device))}:
        raise RuntimeError(f"{variant}: weights on {sorted(placed)}, asked for {device}")
    return module.model, lambda data: module.loss(data)[0]


def run(variant: str, model_path: str, device: str, dry_run: bool, vocab: int) -> dict:
    batch, length, steps = (2, 32, 2) if dry_run else (8, 1024, 6)
    r = 8 if dry_run else 64
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, vocab, (batch, length), generator=generator).to(device)
    labels = input_ids.clone()
    labels[:, : length // 4] = -100  # a prompt part, as in SFT
    data = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    model, loss_fn = build(variant, model_path, device, r)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        loss = loss_fn(data)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - start)
    timed = times[1:] or times
    return {"tokens_per_s": batch * length * len(timed) / sum(timed), "peak_gib": peak_memory_gib(device),
            "peak_of": "torch.cuda.max_memory_allocated" if device == "cuda" else "process ru_maxrss",
            "loss_last": loss.item(), "steps": steps, "micro_batch": [batch, length], "lora_r": r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--vocab", type=int, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.variant, args.model, args.device, args.dry_run, args.vocab)))


if __name__ == "__main__":
    main()

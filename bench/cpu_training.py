"""Training speed on CPU, the quickstart workload (Gemma-3-270M nf4 + LoRA r16, RT mode, packed micro-batches of 4).

Each run is its own subprocess (peak RSS is per run) running ``lightning.Trainer.fit`` for ``--steps`` steps with
the quickstart's settings and no validation; variants alternate within rounds so drift in machine speed hits all
alike. Variants:

- ``now``: the quickstart as it is (``precision: bf16-mixed``, ``attn_implementation: eager``, the frozen 4-bit
  base dequantised once, freed host memory reused as ``python -m rt_lightning`` does);
- ``sdpa``: ``now`` with the library's default attention (SDPA);
- ``fp32``: the same with ``precision: 32-true`` (the adapter path in fp32, as before);
- ``system_malloc``: ``now`` with glibc's default allocation (every large tensor a fresh mmap);
- ``torch_dropout``: ``now`` with ``bulk_cpu_dropout: false`` (PyTorch's per-element Bernoulli masks);
- ``4bit``: ``now`` with ``dense_cpu_base: false`` (bitsandbytes dequantises in every forward and backward);
- ``before``: with ``--before DIR``, the code checked out in DIR (e.g. an older commit) with the quickstart it had
  (``32-true``).

Reports median trainable tokens/s (steps after the first), peak RSS and the loss per step, and each variant's largest
per-step loss difference from ``before`` (or ``fp32``); ends with one JSON line. No timed asserts: it reports.

    python bench/cpu_training.py --steps 8 --rounds 2
    python bench/cpu_training.py --steps 8 --before /work/before --threads 1    # on a shared machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(settings: dict) -> None:
    import lightning as L
    import torch

    from rt_lightning.data.datamodule import SFTDataModule
    from rt_lightning.hub import EMBEDDED_GEMMA
    from rt_lightning.model.module import ResponseTuningModule

    torch.set_num_threads(settings["threads"])
    variant = settings["variant"]
    if variant != "before" and variant != "system_malloc":
        from rt_lightning.host_memory import reuse_freed_memory

        reuse_freed_memory()
    L.seed_everything(0)
    extra = {} if variant == "before" else {"dense_cpu_base": variant != "4bit"}
    if variant == "torch_dropout":
        extra["bulk_cpu_dropout"] = False
    if variant not in ("before", "sdpa"):
        extra["attn_implementation"] = "eager"
    module = ResponseTuningModule(model=settings["model"] or EMBEDDED_GEMMA, quantize="nf4", lora_r=16, lora_alpha=16,
                                  lora_dropout=0.1, learning_rate=2e-4, gradient_checkpointing=False, **extra)
    data = SFTDataModule(mode="rt", max_length=512, batch_size=4, shuffle=False, val=None,
                         tokenizer=settings["model"] or EMBEDDED_GEMMA)

    class Clock(L.Callback):
        def __init__(self):
            self.times, self.tokens, self.losses, self.last = [], [], [], None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.last = time.perf_counter()
            self.tokens.append(int((batch["labels"][:, 1:] != -100).sum()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self.last)
            self.losses.append(float(outputs["loss"]))

    clock = Clock()
    precision = "32-true" if variant in ("before", "fp32") else "bf16-mixed"
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=settings["steps"],
                        gradient_clip_val=0.3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[clock])
    trainer.fit(module, datamodule=data)
    timed = list(zip(clock.times, clock.tokens))[1:]  # the first step carries one-off costs
    result = {"variant": settings["variant"], "tokens_per_s": sum(t for _, t in timed) / sum(s for s, _ in timed),
              "step_s": [round(s, 3) for s in clock.times], "losses": clock.losses,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print("RESULT " + json.dumps(result), flush=True)


def run(variant: str, args) -> dict:
    env = dict(os.environ)
    pythonpath = args.before if variant == "before" else str(ROOT)
    env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    settings = {"variant": variant, "steps": args.steps, "threads": args.threads, "model": args.model}
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(settings)], env=env, capture_output=True,
                         text=True, cwd=pythonpath)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{variant} run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--variants", default="now,sdpa,fp32,system_malloc,4bit")
    parser.add_argument("--before", help="a checkout of older rt_lightning code, run as variant 'before'")
    parser.add_argument("--model", help="model (default: the embedded Gemma-3-270M base)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    variants = args.variants.split(",") + (["before"] if args.before else [])
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for variant in variants[round_ % len(variants):] + variants[:round_ % len(variants)]:
            result = run(variant, args)
            results[variant].append(result)
            print(f"round {round_} {variant:7s} {result['tokens_per_s']:7.1f} trainable tok/s  "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB  losses {[round(x, 4) for x in result['losses']]}",
                  flush=True)
    summary = {v: {"tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in rs),
                   "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in rs),
                   "losses": rs[0]["losses"]} for v, rs in results.items()}
    reference = summary.get("before", summary.get("fp32", next(iter(summary.values()))))
    for variant, s in summary.items():
        gap = max(abs(a - b) for a, b in zip(s["losses"], reference["losses"]))
        print(f"{variant:7s} median {s['tokens_per_s_median']:7.1f} tok/s "
              f"({s['tokens_per_s_median'] / reference['tokens_per_s_median']:.2f}x)  "
              f"peak RSS {s['peak_rss_mb_median']:.0f} MB  max |loss - reference| {gap:.2e}")
        s["max_loss_gap"] = gap
    print(json.dumps({"bench": "cpu_training", "steps": args.steps, "threads": args.threads, "results": summary}))


if __name__ == "__main__":
    main()

"""Memory per rank, FSDP2 vs DDP: a random model of Llama-3.2-1B's shape, 2 CPU processes (gloo), the user's flags.

Each strategy runs ``python -m rt_lightning fit`` with the paper's recipe, a small overlay (this model, bf16 LoRA r64
on all linear layers, micro-batch 1 x ~60 tokens) and configs/strategies/ddp.yaml or fsdp2.yaml, for 2 optimizer
steps. After the second step every rank reports what it holds (``MemoryReport``): parameter, gradient and AdamW
state bytes, counted from the tensors themselves (a DTensor by its local shard), plus its resident set now and at its
peak. Prints one table and ends with one JSON line; a figure, not an assertion.
    python bench/fsdp_memory.py [--shape llama-3.2-1b|tiny] [--dtype float32|bfloat16] [--quantize nf4]
fp32 by default: on CPUs without AVX512-BF16, bf16 matmuls are emulated and a 1B step takes many minutes; the
sharding ratios do not depend on the dtype.
The peak resident set includes loading: each rank loads the whole model before FSDP2 shards it, so that peak is
about the same for both; the held bytes after the step are what sharding saves during training. Runs use glibc's
allocation defaults (``RT_LIGHTNING_SYSTEM_MALLOC=1``): with rt_lightning's default of keeping freed host memory, an
FSDP2 rank's resident set would stay at its load-time peak, and two 1B ranks in fp32 ran a 24 GiB machine out of
memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"llama-3.2-1b": (2048, 8192, 16, 32, 8, 128256), "tiny": (64, 128, 2, 4, 2, 400)}


def tensor_bytes(tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


class MemoryReport(Callback):
    """After optimizer step 2, write this rank's held bytes and resident set to ``out``.rank<r>.json."""

    def __init__(self, out: str):
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != 2 or Path(f"{self.out}.rank{trainer.global_rank}.json").exists():
            return
        params = list(pl_module.parameters())
        optimizer = trainer.optimizers[0]
        state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
        with open("/proc/self/statm") as fh:
            resident_pages = int(fh.read().split()[1])
        report = {"rank": trainer.global_rank, "strategy": type(trainer.strategy).__name__,
                  "parameter_bytes": sum(tensor_bytes(p) for p in params),
                  "trainable_parameter_bytes": sum(tensor_bytes(p) for p in params if p.requires_grad),
                  "gradient_bytes": sum(tensor_bytes(p.grad) for p in params if p.grad is not None),
                  "optimizer_state_bytes": sum(tensor_bytes(t) for t in state),
                  "rss_now_bytes": resident_pages * os.sysconf("SC_PAGE_SIZE"),
                  "rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        Path(f"{self.out}.rank{trainer.global_rank}.json").write_text(json.dumps(report))


def random_llama(folder: Path, shape: tuple) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    from rt_lightning.testing import tiny_tokenizer

    hidden, inter, layers, heads, kv, vocab = shape
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=True)
    torch.manual_seed(0)
    with torch.device("cpu"):
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def run(folder: Path, model: str, strategy: str, quantize: str, dtype: str) -> list[dict]:
    rows = [{"instruction": f"q{i}", "response": "word " * 50} for i in range(8)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = folder / f"memory-{strategy}"
    overlay = folder / f"{strategy}-overlay.yaml"
    overlay.write_text(yaml.safe_dump({
        "trainer": {"accelerator": "cpu", "devices": 2, "max_steps": 2, "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "precision": "bf16-true" if dtype == "bfloat16" else "32-true",
                    "callbacks": [{"class_path": "fsdp_memory.MemoryReport", "init_args": {"out": str(out)}}]},
        "model": {"model": model, "quantize": quantize, "dtype": dtype},
        "data": {"init_args": {"train": str(folder / "train.jsonl"), "max_length": 128, "batch_size": 1,
                               "global_batch_size": 4}}}))
    done = subprocess.run([sys.executable, "-m", "rt_lightning", "fit", "--config",
                           str(ROOT / "configs" / "recipes" / "qlora-paper.yaml"), "--config", str(overlay),
                           "--config", str(ROOT / "configs" / "strategies" / f"{strategy}.yaml")],
                          cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}", "COLUMNS": "300",
                               # glibc's defaults, so that memory freed by sharding goes back to the kernel and the
                               # resident set shows what a rank holds (rt_lightning keeps freed memory for reuse by
                               # default, host_memory.py: its resident set stays at the load-time peak).
                               "RT_LIGHTNING_SYSTEM_MALLOC": "1"})
    if done.returncode:
        raise SystemExit(f"{strategy} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return [json.loads(Path(f"{out}.rank{rank}.json").read_text()) for rank in (0, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.2-1b")
    parser.add_argument("--quantize", choices=["nf4"], default=None)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fsdp-memory-"))
    model = random_llama(folder / "model", SHAPES[args.shape])
    reports = {strategy: run(folder, model, strategy, args.quantize, args.dtype) for strategy in ("ddp", "fsdp2")}
    keys = ["parameter_bytes", "trainable_parameter_bytes", "gradient_bytes", "optimizer_state_bytes",
            "rss_now_bytes", "rss_peak_bytes"]
    print(f"{args.shape} (random), {args.dtype}, quantize={args.quantize}, 2 CPU processes, per rank (MiB):")
    print(f"{'':28}" + "".join(f"{f'{s} r{r}':>12}" for s in reports for r in (0, 1)) + f"{'fsdp2/ddp':>11}")
    for key in keys:
        values = [reports[s][r][key] for s in reports for r in (0, 1)]
        ratio = (values[2] + values[3]) / max(values[0] + values[1], 1)
        print(f"{key:28}" + "".join(f"{v / 2**20:12.1f}" for v in values) + f"{ratio:11.3f}")
    print(json.dumps({"shape": args.shape, "dtype": args.dtype, "quantize": args.quantize, "reports": reports}))


if __name__ == "__main__":
    main()

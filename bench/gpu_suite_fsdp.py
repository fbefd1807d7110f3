"""Part 4 of bench/gpu_suite.py: the strategy overlays as a user runs them, composed with the paper's recipe.

* ``one_gpu``: ``fit`` with configs/recipes/qlora-paper.yaml + a small-model overlay + configs/strategies/fsdp.yaml
  or fsdp2.yaml on one GPU (one rank: NCCL will not put two ranks on one GPU), QLoRA in bf16-mixed, paged-AdamW
  request, clipping 0.3, gradient checkpointing, a validation set with its sanity check and the generation callback.
* ``two_cpu_processes``: the same flags on 2 CPU processes (gloo) beside the GPU, in fp32, each per-step loss
  compared with one process on the same global batch (what tests/integration/test_distributed.py checks in CI).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "recipes" / "qlora-paper.yaml"
FP32 = ["--model.quantize", "null", "--model.dtype", "float32", "--trainer.precision", "32-true",
        "--model.lora_dropout", "0"]


def small_overlay(folder: Path, model_path: str, accelerator: str) -> Path:
    rows = [{"instruction": f"q{i}", "response": "word " * (3 + (i * 7) % 19)} for i in range(16)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    overlay = folder / "small.yaml"
    overlay.write_text(yaml.safe_dump({
        "trainer": {"accelerator": accelerator, "max_epochs": 1, "enable_progress_bar": False,
                    "default_root_dir": "run", "enable_checkpointing": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "run"}},
                    "callbacks": [{"class_path": "rt_lightning.callbacks.GenerationValidation",
                                   # held-out prompts only: no benchmark file travels, and no hub is reachable
                                   "init_args": {"benchmarks": {}, "heldout": 4, "generation": {"max_new_tokens": 8}}}]},
        "model": {"model": model_path, "lora_r": 8},
        "data": {"init_args": {"train": str(folder / "train.jsonl"), "val": str(folder / "val.jsonl"),
                               "max_length": 256, "batch_size": 2, "global_batch_size": 8}}}))
    return overlay


def strategy_overlay(folder: Path, name: str, on_cpu: bool) -> Path:
    overlay = yaml.safe_load((ROOT / "configs" / "strategies" / f"{name}.yaml").read_text())
    if on_cpu and name == "fsdp":  # Lightning runs FSDP1 on CPUs only through this test subclass
        overlay["trainer"]["strategy"]["class_path"] = "tests.support.lightning.CPUFSDPStrategy"
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def fit(folder: Path, name: str, *flags: str) -> dict:
    workdir = folder / name
    workdir.mkdir()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rt_lightning", "fit", "--config", str(RECIPE), *flags],
                          cwd=workdir, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"})
    output = done.stdout + done.stderr
    result = {"ok": done.returncode == 0, "seconds": round(time.perf_counter() - start, 1),
              "set_up_lines": [line.split("INFO", 1)[-1].strip() for line in output.splitlines()
                               if "Effective batch" in line or "] FSDP" in line or "Optimizer:" in line]}
    if done.returncode:
        result["output_tail"] = output[-2500:]
        return result
    metrics = max(workdir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    with metrics.open() as fh:
        rows = list(csv.DictReader(fh))
    result["train_loss_step"] = {r["step"]: float(r["train_loss_step"]) for r in rows if r.get("train_loss_step")}
    result["gen_keys"] = sorted({k for r in rows for k, v in r.items() if v and k.startswith("gen/")})
    return result


def one_gpu(model_path: str, dry_run: bool) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="gpu-suite-fsdp-"))
    overlay = small_overlay(folder, model_path, "cpu" if dry_run else "gpu")
    out = {}
    for name in ("fsdp", "fsdp2"):
        if dry_run and name == "fsdp":
            # FSDP1 on a single CPU rank (the test subclass) with this tied-embedding model fails inside torch's
            # FSDP1 (_use_unsharded_views: "as_params=True type(prim_param)=Tensor"), not yet understood; FSDP1 on
            # CPUs is covered by the 2-process comparison below and tests/integration/test_distributed.py.
            out[name] = {"skipped": "FSDP1 on one CPU rank: see bench/gpu_suite_fsdp.py"}
            continue
        out[name] = fit(folder, name, "--config", str(overlay), "--config", str(strategy_overlay(folder, name, dry_run)),
                        "--trainer.devices", "1")
    return out


def two_cpu_processes(model_path: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="gpu-suite-gloo-"))
    overlay = small_overlay(folder, model_path, "cpu")
    runs = {"single": fit(folder, "single", "--config", str(overlay), "--trainer.devices", "1", *FP32)}
    for name in ("fsdp", "fsdp2"):
        runs[name] = fit(folder, name, "--config", str(overlay), "--config", str(strategy_overlay(folder, name, True)),
                         "--trainer.devices", "2", *FP32)
    reference = runs["single"].get("train_loss_step", {})
    for name in ("fsdp", "fsdp2"):
        losses = runs[name].get("train_loss_step", {})
        runs[name]["max_loss_difference_vs_single"] = (max(abs(losses[s] - reference[s]) for s in reference)
                                                       if reference and set(losses) == set(reference) else None)
    return runs

"""Two CPU processes (gloo): DDP and FSDP2 must train exactly like one process on the same global batch."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
STRATEGIES = {
    "single": ["--trainer.devices", "1", "--data.init_args.batch_size", "4"],
    "ddp": ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.init_args.batch_size", "2"],
    "fsdp2": ["--config", str(ROOT / "configs" / "strategies" / "fsdp2.yaml"), "--trainer.devices", "2",
              "--data.init_args.batch_size", "2"],
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("dist")
    # Uneven lengths, so each rank's share of trained tokens differs from step to step.
    train = write_jsonl(folder / "train.jsonl", [{"instruction": "q" * i, "response": "word " * (1 + (i * 7) % 23)}
                                                 for i in range(20)])
    val = write_jsonl(folder / "val.jsonl", [{"instruction": f"held out {i}?", "response": "yes " * (i + 1)}
                                             for i in range(7)])
    advbench = folder / "advbench.csv"
    advbench.write_text("goal,target\n" + "".join(f"Do harmful thing {i},Sure\n" for i in range(5)))
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 2, "log_every_n_steps": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": "run", "num_sanity_val_steps": 0,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "run"}},
                    "callbacks": [
                        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                         "init_args": {"save_last": True, "every_n_train_steps": 5, "save_top_k": -1}},
                        # 5 + 6 = 11 prompts: the ranks hold 6 and 5, so sharded decoding must keep them in step.
                        {"class_path": "rt_lightning.callbacks.GenerationValidation",
                         "init_args": {"benchmarks": {"advbench": 5}, "paths": {"advbench": str(advbench)},
                                       "heldout": 6, "generation": {"max_new_tokens": 6}}}]},
        "model": {"model": tiny_model_dir, "quantize": None, "lora_r": 8, "lora_dropout": 0.0, "dtype": "float32",
                  "gradient_checkpointing": False},
        "data": {"class_path": "rt_lightning.data.SFTDataModule",
                 "init_args": {"train": str(train), "val": str(val), "shuffle": False}}}))
    return folder, config


def fit(folder: Path, config: Path, name: str, *extra: str) -> list[dict]:
    workdir = folder / name
    workdir.mkdir(exist_ok=True)
    args = [sys.executable, "-m", "rt_lightning", "fit", "--config", str(config), *extra]
    done = subprocess.run(args, cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = max(workdir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    with metrics.open() as fh:
        return list(csv.DictReader(fh))


def step_losses(rows):
    return {int(r["step"]): float(r["train_loss_step"]) for r in rows if r.get("train_loss_step")}


def logged(rows, prefix):
    return {k: float(v) for r in rows for k, v in r.items() if v and (k.startswith(prefix))}


@pytest.fixture(scope="module")
def runs(setup):
    folder, config = setup
    return {name: fit(folder, config, name, *args) for name, args in STRATEGIES.items()}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_losses_match_a_single_process_step_by_step(runs, strategy):
    single, other = step_losses(runs["single"]), step_losses(runs[strategy])
    assert sorted(single) == sorted(other) == list(range(10))
    for step in single:
        assert abs(single[step] - other[step]) < 1e-4, (step, single[step], other[step])


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_validation_and_generation_metrics_match(runs, strategy):
    for prefix in ("val_loss", "gen/"):
        single, other = logged(runs["single"], prefix), logged(runs[strategy], prefix)
        assert single and set(single) == set(other) - {"gen/seconds"} | ({"gen/seconds"} & set(single))
        for key in single:
            if key != "gen/seconds":
                assert abs(single[key] - other[key]) < 1e-4, (key, single[key], other[key])


def test_fsdp2_checkpoint_resumes_the_curve_and_loads_in_one_process(setup, runs):
    folder, config = setup
    fsdp2 = STRATEGIES["fsdp2"]
    # Stop after the first epoch (5 steps), then resume: Lightning restarts a map-style epoch from its first
    # batch, so a curve continues exactly only from an epoch boundary (a mid-epoch resume replays that epoch).
    fit(folder, config, "fsdp2-part", *fsdp2, "--trainer.max_epochs", "1")
    (last,) = list((folder / "fsdp2-part").rglob("last.ckpt"))
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 5 and all("lora_" in k for k in state["state_dict"])
    resumed = step_losses(fit(folder, config, "fsdp2-part", *fsdp2, "--ckpt_path", "last"))
    full = step_losses(runs["fsdp2"])
    assert set(range(5, 10)) <= set(resumed)
    for step in range(5, 10):
        assert abs(resumed[step] - full[step]) < 1e-4, (step, resumed[step], full[step])

    from rt_lightning.model.export import load_module_from_checkpoint

    module = load_module_from_checkpoint(str(last))
    loaded = dict(module.named_parameters())
    for key, value in state["state_dict"].items():
        torch.testing.assert_close(loaded[key], value)


def test_qlora_under_fsdp2_matches_a_single_process(setup):
    """4-bit base (bf16 quant storage) + LoRA under FSDP2 follows one process: no silent zero loss or NaN."""
    folder, config = setup
    qlora = ["--model.quantize", "nf4", "--model.dtype", "bfloat16", "--trainer.max_epochs", "1"]
    single = step_losses(fit(folder, config, "qlora-single", *STRATEGIES["single"], *qlora))
    fsdp2 = step_losses(fit(folder, config, "qlora-fsdp2", *STRATEGIES["fsdp2"], *qlora))
    assert sorted(single) == sorted(fsdp2) == list(range(5))
    for step in single:  # bf16 compute: agreement to bf16 noise, far below the loss's step-to-step change
        assert abs(single[step] - fsdp2[step]) < 2e-3, (step, single[step], fsdp2[step])
    (last,) = list((folder / "qlora-fsdp2").rglob("last.ckpt"))
    assert all("lora_" in key for key in torch.load(last, weights_only=False)["state_dict"])

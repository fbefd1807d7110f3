"""Resume is exact: an interrupted run continued with ``--ckpt_path last`` trains what an uninterrupted run trains.

Shuffling and LoRA dropout are on, so the epoch's order, the position inside it and the dropout masks must all be
restored. Each case compares the per-step losses and the final adapter of the two runs.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.support.files import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
STEPS_PER_EPOCH, EPOCHS = 5, 3  # 20 examples, a global batch of 4
KILLED_AT = 7  # the 3rd batch of the 2nd epoch: a mid-epoch resume
SETUPS = {
    "single": ["--trainer.devices", "1", "--data.init_args.batch_size", "4"],
    "ddp": ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.init_args.batch_size", "2"],
    "fsdp2": ["--config", str(ROOT / "configs" / "strategies" / "fsdp2.yaml"), "--trainer.devices", "2",
              "--data.init_args.batch_size", "2"],
    "qlora": ["--trainer.devices", "1", "--data.init_args.batch_size", "4", "--model.quantize", "nf4",
              "--model.dtype", "bfloat16", "--trainer.precision", "bf16-true"],
}


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_model_dir) -> Path:
    folder = tmp_path_factory.mktemp("resume")
    train = write_jsonl(folder / "train.jsonl", [{"instruction": "q" * i, "response": "word " * (1 + (i * 7) % 23)}
                                                 for i in range(20)])
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": EPOCHS, "log_every_n_steps": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": "run", "limit_val_batches": 0,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "run"}},
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"save_last": True, "every_n_train_steps": 1}}]},
        "model": {"model": tiny_model_dir, "quantize": None, "lora_r": 8, "lora_dropout": 0.1, "dtype": "float32",
                  "gradient_checkpointing": False},
        "data": {"class_path": "rt_lightning.data.SFTDataModule",
                 "init_args": {"train": str(train), "val": None, "shuffle": True}}}))
    return path


def fit(workdir: Path, config: Path, *extra: str, killed: bool = False) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "rt_lightning", "fit", "--config", str(config), *extra]
    done = subprocess.run(args, cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=900)
    assert (done.returncode != 0) if killed else (done.returncode == 0), done.stderr[-3000:]


def losses(workdir: Path) -> dict[int, float]:
    """Per-step training losses over every logger version under ``workdir`` (the resumed run's win)."""
    out = {}
    for metrics in sorted(workdir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime):
        with metrics.open() as fh:
            out.update({int(r["step"]): float(r["train_loss_step"]) for r in csv.DictReader(fh)
                        if r.get("train_loss_step")})
    return out


def adapter(workdir: Path) -> dict[str, torch.Tensor]:
    last = max(workdir.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == STEPS_PER_EPOCH * EPOCHS
    return state["state_dict"]


def differences(straight: Path, resumed: Path, first_resumed_step: int) -> tuple[float, float]:
    """Max |loss difference| over the resumed steps, and max |adapter difference| at the end."""
    a, b = losses(straight), losses(resumed)
    steps = range(first_resumed_step, STEPS_PER_EPOCH * EPOCHS)
    assert set(steps) <= set(a) and set(steps) <= set(b), (sorted(a), sorted(b))
    loss_diff = max(abs(a[s] - b[s]) for s in steps)
    wa, wb = adapter(straight), adapter(resumed)
    assert wa.keys() == wb.keys() and wa
    weight_diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    print(f"max |loss diff| {loss_diff:.3g}, max |adapter diff| {weight_diff:.3g}")
    return loss_diff, weight_diff


@pytest.fixture(scope="module")
def straight(tmp_path_factory, config):
    runs = {}

    def run(setup: str) -> Path:
        if setup not in runs:
            runs[setup] = tmp_path_factory.mktemp(f"straight-{setup}")
            fit(runs[setup], config, *SETUPS[setup])
        return runs[setup]
    return run


# The epoch-boundary case runs in one process only (the mid-epoch case below covers every setup, and is the harder
# one): together they keep this file to a few minutes of CI.
@pytest.mark.parametrize("setup", ["single"])
def test_resume_from_an_epoch_boundary_is_exact_with_shuffle_and_dropout(tmp_path, config, straight, setup):
    # The first run ends with a checkpoint written after the epoch's last batch (every_n_train_steps).
    fit(tmp_path, config, *SETUPS[setup], "--trainer.max_epochs", "1")
    fit(tmp_path, config, *SETUPS[setup], "--ckpt_path", "last")
    assert differences(straight(setup), tmp_path, STEPS_PER_EPOCH) == (0.0, 0.0)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_resume_after_a_kill_mid_epoch_is_exact(tmp_path, config, straight, setup):
    kill = ["--trainer.callbacks+=tests.support.faults.ExitAtStep", f"--trainer.callbacks.step={KILLED_AT}"]
    fit(tmp_path, config, *SETUPS[setup], *kill, killed=True)
    assert max(losses(tmp_path)) == KILLED_AT - 1
    fit(tmp_path, config, *SETUPS[setup], "--ckpt_path", "last")
    assert differences(straight(setup), tmp_path, KILLED_AT) == (0.0, 0.0)

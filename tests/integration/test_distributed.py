"""Two CPU processes (gloo): DDP, FSDP1 and FSDP2 must train exactly like one process on the same global batch."""

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
STRATEGIES = {
    "single": ["--trainer.devices", "1", "--data.init_args.batch_size", "4"],
    "ddp": ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.init_args.batch_size", "2"],
    "fsdp2": ["--config", str(ROOT / "configs" / "strategies" / "fsdp2.yaml"), "--trainer.devices", "2",
              "--data.init_args.batch_size", "2"],
    "fsdp1": ["--config", "{fsdp1_on_cpu}", "--trainer.devices", "2", "--data.init_args.batch_size", "2"],
}


def fsdp1_on_cpu(folder: Path) -> Path:
    """configs/strategies/fsdp.yaml as shipped, but with the strategy class that Lightning lets run on CPUs."""
    overlay = yaml.safe_load((ROOT / "configs" / "strategies" / "fsdp.yaml").read_text())
    overlay["trainer"]["strategy"]["class_path"] = "tests.support.lightning.CPUFSDPStrategy"
    path = folder / "fsdp1-cpu.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


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
    extra = [arg.format(fsdp1_on_cpu=fsdp1_on_cpu(folder)) for arg in extra]
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


@pytest.mark.parametrize("strategy", ["ddp", "fsdp1", "fsdp2"])
def test_losses_match_a_single_process_step_by_step(runs, strategy):
    single, other = step_losses(runs["single"]), step_losses(runs[strategy])
    assert sorted(single) == sorted(other) == list(range(10))
    for step in single:
        assert abs(single[step] - other[step]) < 1e-4, (step, single[step], other[step])


@pytest.mark.parametrize("strategy", ["ddp", "fsdp1", "fsdp2"])
def test_validation_and_generation_metrics_match(runs, strategy):
    for prefix in ("val_loss", "gen/"):
        single, other = logged(runs["single"], prefix), logged(runs[strategy], prefix)
        assert single and set(single) == set(other) - {"gen/seconds"} | ({"gen/seconds"} & set(single))
        for key in single:
            if key != "gen/seconds":
                assert abs(single[key] - other[key]) < 1e-4, (key, single[key], other[key])


@pytest.mark.parametrize("strategy", ["fsdp1", "fsdp2"])
def test_sharded_checkpoint_resumes_the_curve_and_loads_in_one_process(setup, runs, strategy):
    folder, config = setup
    args = STRATEGIES[strategy]
    # Stop after the first epoch (5 steps), then resume: Lightning restarts a map-style epoch from its first
    # batch, so a curve continues exactly only from an epoch boundary (a mid-epoch resume replays that epoch).
    fit(folder, config, f"{strategy}-part", *args, "--trainer.max_epochs", "1")
    (last,) = list((folder / f"{strategy}-part").rglob("last.ckpt"))
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 5 and len(state["state_dict"]) == 28  # 2 layers x 7 projections x (A, B)
    assert all("lora_" in k for k in state["state_dict"])
    resumed = step_losses(fit(folder, config, f"{strategy}-part", *args, "--ckpt_path", "last"))
    full = step_losses(runs[strategy])
    assert set(range(5, 10)) <= set(resumed)
    for step in range(5, 10):
        assert abs(resumed[step] - full[step]) < 1e-4, (step, resumed[step], full[step])

    from rt_lightning.model.checkpoint import load_module_from_checkpoint

    module = load_module_from_checkpoint(str(last))
    loaded = dict(module.named_parameters())
    for key, value in state["state_dict"].items():
        torch.testing.assert_close(loaded[key], value)


@pytest.mark.parametrize("strategy", ["fsdp1", "fsdp2"])
def test_qlora_under_sharding_matches_a_single_process(setup, strategy):
    """4-bit base (bf16 quant storage) + LoRA, sharded, follows one process: no silent zero loss or NaN."""
    folder, config = setup
    qlora = ["--model.quantize", "nf4", "--model.dtype", "bfloat16", "--trainer.max_epochs", "1",
             "--trainer.precision", "bf16-true"]  # FSDP1 computes in its param_dtype: bf16, the 4-bit storage dtype
    single = step_losses(fit(folder, config, "qlora-single", *STRATEGIES["single"], *qlora))
    sharded = step_losses(fit(folder, config, f"qlora-{strategy}", *STRATEGIES[strategy], *qlora))
    assert sorted(single) == sorted(sharded) == list(range(5))
    for step in single:  # bf16 compute: agreement to bf16 noise, far below the loss's step-to-step change
        assert abs(single[step] - sharded[step]) < 2e-3, (step, single[step], sharded[step])
    (last,) = list((folder / f"qlora-{strategy}").rglob("last.ckpt"))
    adapter = torch.load(last, weights_only=False)["state_dict"]
    assert len(adapter) == 28 and all("lora_" in key for key in adapter)


def test_qlora_under_fsdp1_in_fp32_is_refused_at_start_up(setup):
    folder, config = setup
    args = [sys.executable, "-m", "rt_lightning", "fit", "--config", str(config),
            *[a.format(fsdp1_on_cpu=fsdp1_on_cpu(folder)) for a in STRATEGIES["fsdp1"]],
            "--model.quantize", "nf4", "--model.dtype", "bfloat16", "--trainer.precision", "32-true"]
    done = subprocess.run(args, cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 0 and "needs trainer.precision bf16-true" in done.stderr

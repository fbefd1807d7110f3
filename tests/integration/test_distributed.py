"""Two CPU processes (gloo), through the user's flags: the paper's recipe composed with a tiny model overlay and a
strategy overlay (DDP, FSDP1, FSDP2), with the recipe's optimizer request, clipping 0.3, gradient checkpointing, a
global batch kept by accumulation, a validation set with its sanity check, and the generation callback. Each must
train step by step like one process on the same global batch."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.support.files import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "configs" / "recipes" / "qlora-paper.yaml")
STRATEGIES = ROOT / "configs" / "strategies"
pytestmark = pytest.mark.slow
# Exact comparisons need what differs by construction between layouts switched off: dropout masks follow the
# examples' placement, bf16 rounding follows the summation order.
FP32 = ["--model.quantize", "null", "--model.dtype", "float32", "--trainer.precision", "32-true",
        "--model.lora_dropout", "0"]
LAYOUTS = {
    "single": ["--trainer.devices", "1"],
    "ddp": ["--config", str(STRATEGIES / "ddp.yaml"), "--trainer.devices", "2"],
    "fsdp1": ["--config", "{fsdp1_on_cpu}", "--trainer.devices", "2"],
    "fsdp2": ["--config", str(STRATEGIES / "fsdp2.yaml"), "--trainer.devices", "2"],
}
NCCL_LIKE = ["--trainer.callbacks+=tests.support.lightning.ValidateLikeNCCL"]


def fsdp1_on_cpu(folder: Path) -> Path:
    """configs/strategies/fsdp.yaml as shipped, but with the strategy class that Lightning lets run on CPUs."""
    overlay = yaml.safe_load((STRATEGIES / "fsdp.yaml").read_text())
    overlay["trainer"]["strategy"]["class_path"] = "tests.support.lightning.CPUFSDPStrategy"
    path = folder / "fsdp1-cpu.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def dump(name: str) -> list[str]:
    return [f"--trainer.callbacks+={{class_path: tests.support.lightning.DumpStep, init_args: {{out: {name}}}}}"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("dist")
    # Uneven lengths, so each rank's and each micro-batch's share of trained tokens differs from step to step.
    train = write_jsonl(folder / "train.jsonl", [{"instruction": "q" * i, "response": "word " * (1 + (i * 7) % 23)}
                                                 for i in range(32)])
    val = write_jsonl(folder / "val.jsonl", [{"instruction": f"held out {i}?", "response": "yes " * (i + 1)}
                                             for i in range(7)])
    advbench = folder / "advbench.csv"
    advbench.write_text("goal,target\n" + "".join(f"Do harmful thing {i},Sure\n" for i in range(5)))
    overlay = folder / "tiny.yaml"  # what a user's small-model overlay changes in the recipe; nothing else
    overlay.write_text(yaml.safe_dump({
        "trainer": {"accelerator": "cpu", "max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": "run",
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "run"}},
                    "callbacks": [
                        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                         "init_args": {"save_last": True, "every_n_epochs": 1, "save_top_k": -1}},
                        # 5 + 6 = 11 prompts: the ranks hold 6 and 5, so sharded decoding must keep them in step.
                        {"class_path": "rt_lightning.callbacks.GenerationValidation",
                         "init_args": {"benchmarks": {"advbench": 5}, "paths": {"advbench": str(advbench)},
                                       "heldout": 6, "generation": {"max_new_tokens": 6}}}]},
        "model": {"model": tiny_model_dir, "lora_r": 8},
        # 32 examples, 8 per optimizer step: 4 steps an epoch, 8 in all; micro-batch 1, so one process accumulates
        # 8 micro-batches and each of 2 processes 4.
        "data": {"init_args": {"train": str(train), "val": str(val), "max_length": 256, "batch_size": 1,
                               "global_batch_size": 8}}}))
    return folder, overlay


def fit(folder: Path, overlay: Path, name: str, *extra: str, expect_ok: bool = True) -> tuple[list[dict], str]:
    workdir = folder / name
    workdir.mkdir(exist_ok=True)
    extra = [str(fsdp1_on_cpu(folder)) if arg == "{fsdp1_on_cpu}" else arg for arg in extra]
    args = [sys.executable, "-m", "rt_lightning", "fit", "--config", RECIPE, "--config", str(overlay), *extra]
    done = subprocess.run(args, cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"},
                          capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    if not expect_ok:
        assert done.returncode != 0, output[-3000:]
        return [], output
    assert done.returncode == 0, output[-3000:]
    metrics = max(workdir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    with metrics.open() as fh:
        return list(csv.DictReader(fh)), output


def per_step(rows, key):
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


def logged(rows, prefix):
    return {k: float(v) for r in rows for k, v in r.items() if v and k.startswith(prefix) and k != "gen/seconds"}


@pytest.fixture(scope="module")
def runs(setup):
    folder, overlay = setup
    done = {name: fit(folder, overlay, name, *args, *FP32, *dump("first.pt")) for name, args in LAYOUTS.items()}
    # The same global batch of 8 as one micro-batch, without accumulation: the reference for accumulated gradients.
    done["one-batch"] = fit(folder, overlay, "one-batch", *LAYOUTS["single"], *FP32, *dump("first.pt"),
                            "--data.init_args.batch_size", "8", "--trainer.max_epochs", "1")
    return done


def first_step(folder, name):
    return torch.load(folder / name / "first.pt")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp1", "fsdp2"])
def test_losses_and_gradient_norms_match_a_single_process_step_by_step(runs, strategy):
    for key in ("train_loss_step", "grad_norm"):
        single, other = per_step(runs["single"][0], key), per_step(runs[strategy][0], key)
        assert sorted(single) == sorted(other) == list(range(8)), key
        for step in single:
            assert abs(single[step] - other[step]) < 1e-5, (key, step, single[step], other[step])
    # The recipe's clipping at 0.3 is active on this model (norms ~1.5), so it is compared too.
    assert min(per_step(runs["single"][0], "grad_norm").values()) > 0.3


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp1", "fsdp2"])
def test_accumulated_gradients_equal_those_of_one_batch_of_the_whole_global_batch(setup, runs, strategy):
    """1 process accumulating 8 micro-batches, or 2 accumulating 4 each, step with the gradient of one batch of 8."""
    folder, _ = setup
    reference, accumulated = first_step(folder, "one-batch")["grads"], first_step(folder, strategy)["grads"]
    assert len(reference) == 28 and set(reference) == set(accumulated)  # 2 layers x 7 projections x (A, B)
    for name, grad in reference.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp1", "fsdp2"])
def test_validation_and_generation_metrics_match(runs, strategy):
    for prefix in ("val_loss", "gen/"):
        single, other = logged(runs["single"][0], prefix), logged(runs[strategy][0], prefix)
        assert single and set(single) == set(other)
        for key in single:
            assert abs(single[key] - other[key]) < 1e-5, (key, single[key], other[key])


def test_set_up_lines_state_the_layout_the_batch_and_the_optimizer(runs):
    output = runs["fsdp2"][1]
    for rank in (0, 1):
        found = re.search(rf"\[rank {rank}\] FSDP2: 2 decoder layers sharded over 2 ranks; this rank holds ([\d,]+) of "
                          r"([\d,]+) parameters of those layers \(50\.0%\); replicated on every rank: embeddings, final "
                          r"norm and LM head", output)
        assert found, output[-3000:]
        held, total = (int(g.replace(",", "")) for g in found.groups())
        assert 2 * held == total
    assert "Effective batch: 8 examples per optimizer step = micro-batch 1 × 2 process(es) × 4 accumulated" in output
    assert "Optimizer: torch.optim.AdamW on each rank's shard instead of paged_adamw_32bit" in output
    assert "Effective batch: 8 examples per optimizer step = micro-batch 1 × 1 process(es) × 8 accumulated" in \
        runs["single"][1]
    assert re.search(r"\[rank 1\] FSDP1 \(FULL_SHARD\): \d+ units over 2 ranks; this rank holds [\d,]+ of [\d,]+ "
                     r"parameters \(50\.0%\)", runs["fsdp1"][1])
    assert "[rank 0] DDPStrategy: a full copy of the model on each of 2 ranks" in runs["ddp"][1]


def test_each_rank_holds_half_of_each_sharded_layer_parameter(setup, runs):
    import json

    folder, _ = setup
    for rank in (0, 1):
        sizes = json.loads((folder / "fsdp2" / f"first.pt.rank{rank}.json").read_text())
        assert len(sizes) == 2 * (9 + 14)  # per layer: 7 projections + 2 norms, and 7 LoRA A/B pairs
        for name, (local, whole, placements) in sizes.items():
            assert 2 * local == whole and placements == "(Shard(dim=0),)", (rank, name, local, whole, placements)


@pytest.mark.parametrize("strategy", ["fsdp1", "fsdp2"])
def test_sharded_checkpoint_resumes_the_curve_and_loads_in_one_process(setup, runs, strategy):
    folder, overlay = setup
    args = [*LAYOUTS[strategy], *FP32, *(NCCL_LIKE if strategy == "fsdp2" else [])]
    # Stop after the first epoch (4 steps), then resume: Lightning restarts a map-style epoch from its first
    # batch, so a curve continues exactly only from an epoch boundary (a mid-epoch resume replays that epoch).
    _, output = fit(folder, overlay, f"{strategy}-part", *args, "--trainer.max_epochs", "1")
    (last,) = list((folder / f"{strategy}-part").rglob("last.ckpt"))
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4 and len(state["state_dict"]) == 28
    assert all("lora_" in k for k in state["state_dict"])
    rows, output = fit(folder, overlay, f"{strategy}-part", *args, "--ckpt_path", "last")
    resumed, full = per_step(rows, "train_loss_step"), per_step(runs[strategy][0], "train_loss_step")
    assert set(range(4, 8)) <= set(resumed)
    for step in range(4, 8):
        assert abs(resumed[step] - full[step]) < 1e-5, (step, resumed[step], full[step])
    if strategy == "fsdp2":  # validation as an NCCL run of the shipped overlay gets it (inference_mode: false)
        assert "validation grad mode: no_grad" in output and "validation grad mode: inference_mode" not in output

    from rt_lightning.model.checkpoint import load_module_from_checkpoint

    module = load_module_from_checkpoint(str(last))
    loaded = dict(module.named_parameters())
    for key, value in state["state_dict"].items():
        torch.testing.assert_close(loaded[key], value)


def test_fsdp2_validation_in_inference_mode_fails_the_first_step_so_the_overlay_turns_it_off(setup):
    """Positive control for the overlay's ``inference_mode: false``: validation in inference mode, as NCCL picks it,
    leaves FSDP2 holding inference tensors that the first training step cannot update."""
    folder, overlay = setup
    _, output = fit(folder, overlay, "fsdp2-inference-mode", *LAYOUTS["fsdp2"], *FP32, *NCCL_LIKE,
                    "--trainer.inference_mode", "true", "--trainer.max_steps", "1", expect_ok=False)
    assert "validation grad mode: inference_mode" in output
    assert "inference tensor" in output.lower(), output[-3000:]


@pytest.fixture(scope="module")
def qlora(setup):
    """The recipe's QLoRA (nf4, bf16-mixed) on one process, FSDP1 and FSDP2, with the 4-bit bytes hashed."""
    folder, overlay = setup
    hashes = "--trainer.callbacks+={class_path: tests.support.lightning.HashQuantizedBytes, init_args: {out: hashes.json}}"
    return {name: fit(folder, overlay, f"qlora-{name}", *LAYOUTS[name], "--model.lora_dropout", "0",
                      "--trainer.max_epochs", "1", hashes, *dump("first.pt"))
            for name in ("single", "fsdp1", "fsdp2")}


@pytest.mark.parametrize("strategy", ["fsdp1", "fsdp2"])
def test_qlora_4bit_bytes_are_unchanged_by_sharding_and_training(setup, qlora, strategy):
    import json

    folder, _ = setup
    single = json.loads((folder / "qlora-single" / "hashes.json").read_text())
    sharded = json.loads((folder / f"qlora-{strategy}" / "hashes.json").read_text())
    assert len(single["fit_start"]) == 14 and sharded["steps"] == {"global_step": "4"}
    assert sharded["fit_start"] == sharded["train_end"] == single["fit_start"] == single["train_end"]
    one, other = per_step(qlora["single"][0], "train_loss_step"), per_step(qlora[strategy][0], "train_loss_step")
    assert sorted(one) == sorted(other) == list(range(4))
    for step in one:  # bf16 compute: agreement to bf16 noise, far below the loss's step-to-step change
        assert abs(one[step] - other[step]) < 2e-3, (step, one[step], other[step])


def test_rotary_frequencies_stay_fp32_under_fsdp1_bf16_mixed(setup, qlora):
    folder, _ = setup
    single = first_step(folder, "qlora-single")["buffers"]
    fsdp1 = first_step(folder, "qlora-fsdp1")["buffers"]
    assert single and set(single) == set(fsdp1)
    for name, value in single.items():
        assert value.dtype == fsdp1[name].dtype == torch.float32, name
        torch.testing.assert_close(fsdp1[name], value, rtol=0, atol=0)
        assert not torch.equal(value.bfloat16().float(), value)  # what a bf16 cast would have changed


def test_qlora_under_fsdp1_in_fp32_is_refused_at_start_up(setup):
    folder, overlay = setup
    _, output = fit(folder, overlay, "fsdp1-qlora-fp32", *LAYOUTS["fsdp1"], "--trainer.precision", "32-true",
                    expect_ok=False)
    assert "needs trainer.precision bf16-true" in output

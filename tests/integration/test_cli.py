import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rt_lightning.__main__ import main
from rt_lightning.commands.fit import RTLightningCLI
from rt_lightning.data.global_batch import accumulation_for
from tests.support.files import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
# configs/reproduce/ holds presets of the `reproduce` command, not fit configs; they are tested with that command.
CONFIGS = sorted(c for c in (ROOT / "configs").rglob("*.yaml") if "reproduce" not in c.relative_to(ROOT).parts)
RECIPE = ROOT / "configs" / "recipes" / "qlora-paper.yaml"
MODEL_CONFIGS = sorted((ROOT / "configs" / "models").glob("*.yaml"))
OVERLAYS = [*sorted((ROOT / "configs" / "data").glob("*.yaml")), *sorted((ROOT / "configs" / "modes").glob("*.yaml")),
            *sorted((ROOT / "configs" / "mixtures").glob("*.yaml"))]
STRATEGIES = sorted((ROOT / "configs" / "strategies").glob("*.yaml"))
STANDALONE = [c for c in CONFIGS if c.parent == ROOT / "configs"]
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))


def test_configs_exist_and_each_is_tested_below():
    assert len(MODEL_CONFIGS) == 5 and len(OVERLAYS) >= 7 and RECIPE in RECIPES
    assert sorted([*STANDALONE, *RECIPES, *MODEL_CONFIGS, *OVERLAYS, *STRATEGIES]) == CONFIGS


@pytest.mark.parametrize("config", STANDALONE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_standalone_config_parses(config):
    cli = RTLightningCLI(args=["--config", str(config), "--trainer.accelerator", "cpu"], run=False)
    assert cli.datamodule.tokenizer == cli.model.hparams.model  # linked


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.name)
def test_every_model_overlay_composes_with_the_recipe(config):
    cli = RTLightningCLI(args=["--config", str(RECIPE), "--config", str(config), "--trainer.accelerator", "cpu"],
                         run=False)
    overlay, recipe = yaml.safe_load(config.read_text()), yaml.safe_load(RECIPE.read_text())
    assert cli.model.hparams.model == cli.datamodule.tokenizer == overlay["model"]["model"]
    assert cli.model.hparams.lora_r == recipe["model"]["lora_r"] == 64  # the recipe's, untouched by the overlay
    run_dir = overlay["trainer"]["default_root_dir"]
    assert run_dir == f"runs/{config.stem}" and cli.trainer.default_root_dir == run_dir
    # The overlay's logger save_dir merges into the recipe's logger, which keeps its class and name.
    assert cli.trainer.logger.save_dir == run_dir and cli.trainer.logger.name == "logs"
    # The paper's batch of 64, derived into accumulation at start-up: 8 on one device.
    assert cli.datamodule.global_batch_size == 64 and cli.datamodule.batch_size == 8
    assert accumulation_for(64, cli.datamodule.batch_size, cli.trainer.world_size) == 8


def data_of(config: Path) -> dict:
    return yaml.safe_load(config.read_text())["data"]["init_args"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_overlay_composes_with_a_model_config(overlay):
    cli = RTLightningCLI(args=["--config", str(RECIPE), "--config", str(MODEL_CONFIGS[0]), "--config", str(overlay),
                               "--trainer.accelerator", "cpu"], run=False)
    for key, value in data_of(overlay).items():
        got = getattr(cli.datamodule, key)
        if isinstance(value, dict):  # a nested group, e.g. refusals: compare the keys the overlay sets
            got = {k: getattr(got, k) for k in value}
        assert got == value


def test_refusal_count_is_an_override_and_any_mode_renders_the_mixture():
    mixture = ROOT / "configs" / "mixtures" / "refusals.yaml"
    for mode in ("it", "rt", "rt_empty"):
        mode_overlay = ROOT / "configs" / "modes" / f"{mode}.yaml"
        cli = RTLightningCLI(args=["--config", str(RECIPE), "--config", str(MODEL_CONFIGS[0]),
                                   "--config", str(mode_overlay), "--config", str(mixture),
                                   "--data.init_args.refusals.count", "500", "--trainer.accelerator", "cpu"], run=False)
        refusals, source = cli.datamodule.refusals, data_of(mixture)["refusals"]["source"]
        assert (cli.datamodule.mode, refusals.count, refusals.source) == (mode, 500, source)
        assert refusals.filter == r"\b(ai|sorry)\b" and cli.datamodule.max_examples == 1000


@pytest.mark.parametrize("old, new", [
    (["--data.init_args.mode", "refusal"], "data.mode 'refusal' is gone"),
    (["--data.init_args.num_refusals", "100"], "data.num_refusals → data.refusals.count"),
    (["--data.init_args.refusal_mode", "it"], "data.refusal_mode → data.mode"),
    (["--data.init_args.refusals", str(ROOT / "pyproject.toml")], "set data.refusals.source to"),
])
def test_removed_data_keys_stop_naming_the_new_key(old, new, capsys):
    with pytest.raises((SystemExit, ValueError)) as raised:
        RTLightningCLI(args=["--config", str(ROOT / "configs" / "quickstart.yaml"), *old], run=False)
    assert new in str(raised.value) + capsys.readouterr().err


def test_template_and_layout_by_class_path(tiny_model_dir, small_jsonl):
    cli = RTLightningCLI(args=tiny_args(
        tiny_model_dir, small_jsonl,
        "--data.init_args.template",
        '{class_path: rt_lightning.data.TextTemplate, init_args: {user: "Q: {content}\\n"}}',
        "--data.init_args.layout", "{class_path: rt_lightning.data.FieldLayout, init_args: {input: response}}",
        "--data.init_args.mode", "it"), run=False)
    (row,) = cli.datamodule.inspect(limit=1)
    instruction = "Question number 0?\n\nAnswer 0: the capital of France is Paris."  # instruction + input
    assert row["text"].startswith(f"<s>Q: {instruction}\n<|assistant|>\n")


@pytest.mark.parametrize("overlay", STRATEGIES, ids=lambda p: p.name)
def test_strategy_overlays_parse(overlay, capsys):
    # Parsed only here (Lightning refuses FSDP1 off CUDA); tests/test_distributed.py runs it on CPUs.
    with pytest.raises(SystemExit):
        RTLightningCLI(args=["fit", "--config", str(RECIPE), "--config", str(MODEL_CONFIGS[0]),
                             "--config", str(overlay), "--print_config"])
    strategy = yaml.safe_load(capsys.readouterr().out)["trainer"]["strategy"]
    expected = yaml.safe_load(overlay.read_text())["trainer"]["strategy"]
    assert strategy == expected if isinstance(expected, str) else strategy["class_path"] == expected["class_path"]


def test_print_config(capsys):
    with pytest.raises(SystemExit):
        RTLightningCLI(args=["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["model"] == "embedded:gemma-3-270m" and printed["data"]["init_args"]["mode"] == "rt"


def tiny_args(tiny_model_dir, train, *extra):
    return ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--model.model", tiny_model_dir,
            "--model.quantize", "null", "--model.lora_r", "8", "--data.init_args.train", str(train), *extra]


def test_inspect_subcommand_writes_jsonl(tiny_model_dir, small_jsonl, tmp_path):
    out = tmp_path / "inspect.jsonl"
    main(["inspect", *tiny_args(tiny_model_dir, small_jsonl, "--data.init_args.mode", "it"),
          "--limit", "5", "--output", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5
    assert rows[0]["trainable_text"] == "Answer 0: the capital of France is Paris.</s>\n"
    assert rows[0]["text"].startswith("<s><|user|>\nQuestion number 0?\n<|assistant|>\n")


def test_unknown_mode_stops_with_its_name(tiny_model_dir, small_jsonl):
    with pytest.raises(ValueError, match="Unknown mode 'instruct'"):
        RTLightningCLI(args=tiny_args(tiny_model_dir, small_jsonl, "--data.init_args.mode", "instruct"), run=False)


@pytest.mark.slow
def test_kill_mid_epoch_then_resume_with_ckpt_path_last(tiny_model_dir, tmp_path):
    rows = [{"instruction": f"q{i}", "response": f"Answer number {i} is Paris."} for i in range(24)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 2, "enable_progress_bar": False, "default_root_dir": "run",
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "run"}},
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"save_last": True, "every_n_train_steps": 2}},
                                  {"class_path": "tests.support.lightning.SleepEveryStep", "init_args": {"seconds": 0.3}}]},
        "model": {"model": tiny_model_dir, "quantize": None, "lora_r": 8},
        "data": {"class_path": "rt_lightning.data.SFTDataModule",
                 "init_args": {"train": str(train), "batch_size": 2, "val": None}}}))
    args = [sys.executable, "-m", "rt_lightning", "fit", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list((tmp_path / "run").rglob("last.ckpt")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (killed,) = list((tmp_path / "run").rglob("last.ckpt"))
    step_at_kill = torch.load(killed, weights_only=False)["global_step"]
    assert 2 <= step_at_kill < 12, "should die in the first epoch (12 steps per epoch)"

    resumed = subprocess.run(args + ["--ckpt_path", "last"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stderr + resumed.stdout
    final = max((tmp_path / "run").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    state = torch.load(final, weights_only=False)
    assert state["global_step"] == 24 and state["epoch"] == 1
    assert all("lora_" in key for key in state["state_dict"])
    model_bytes = sum(f.stat().st_size for f in Path(tiny_model_dir).glob("*.safetensors"))
    assert final.stat().st_size < model_bytes  # adapter + optimiser state only


def test_export_adapter_and_merged_model(tiny_model_dir, small_jsonl, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rt_lightning.commands.export import export
    from rt_lightning.model.module import ResponseTuningModule

    module = ResponseTuningModule(model=tiny_model_dir, quantize=None, lora_r=8, dtype="float32")
    module.configure_model()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_()
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "adapter.ckpt")
    out = export(str(tmp_path / "adapter.ckpt"), str(tmp_path / "export"), merge=True)
    ids = torch.tensor([[1, 5, 9, 13]])
    expected = module.model(input_ids=ids).logits
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(out / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"), dtype=torch.float32)
    module.eval(), with_adapter.eval()
    expected = module.model(input_ids=ids).logits
    torch.testing.assert_close(with_adapter(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)

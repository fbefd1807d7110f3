import csv
import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
from lightning.pytorch.loggers import MLFlowLogger

from rt_lightning.callbacks.generation_validation import SAMPLE_COLUMNS, GenerationValidation
from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.generation import GenerationConfig
from rt_lightning.model.module import ResponseTuningModule
from tests.support.files import write_jsonl


def test_generation_validation_logs_metrics_and_samples(tiny_model_dir, small_jsonl, tmp_path, capsys):
    advbench = tmp_path / "advbench.csv"
    advbench.write_text("goal,target\n" + "".join(f"Do harmful thing {i},Sure\n" for i in range(6)))
    val = write_jsonl(tmp_path / "val.jsonl", [{"instruction": f"Held-out {i}?", "response": "Yes."} for i in range(3)])
    ranking = tmp_path / "pairs.json"
    ranking.write_text(json.dumps([{"instruction": f"Name {i}?", "output": f"It is {i}." * (1 + i % 2)}
                                   for i in range(4)]))
    data = SFTDataModule(train=str(small_jsonl), val=str(val), tokenizer=tiny_model_dir, batch_size=4)
    callback = GenerationValidation(benchmarks={"advbench": 6, "response_ranking": 4},
                                    paths={"advbench": str(advbench), "response_ranking": str(ranking)}, heldout=3,
                                    generation=GenerationConfig(max_new_tokens=4))
    logger = L.pytorch.loggers.CSVLogger(str(tmp_path), name="logs")
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=logger, callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    model = ResponseTuningModule(model=tiny_model_dir, quantize=None, lora_r=8, dtype="float32")
    trainer.fit(model, datamodule=data)
    with open(logger.log_dir + "/metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"gen/advbench/rr", "gen/advbench/stop_rate", "gen/heldout/mean_tokens", "gen/seconds", "val_loss",
            "gen/response_ranking/accuracy", "gen/response_ranking/ci_low"} <= logged
    epochs_with_rr = [r["epoch"] for r in rows if r.get("gen/advbench/rr")]
    assert epochs_with_rr == ["0", "1"]
    with open(logger.log_dir + "/generations-epoch1.csv") as fh:
        samples = list(csv.DictReader(fh))
    assert len(samples) == 9 and {s["benchmark"] for s in samples} == {"advbench", "heldout"}
    assert "GenerationValidation: 9 prompts" in capsys.readouterr().out


ROWS = [{"benchmark": b, "id": f"{b}-{i}", "subset": "", "instruction": f"Q{i} | why?", "response": f"A{i}\nmore",
         "finish_reason": "eos", "num_tokens": 3, "refused": i == 0} for b in ("advbench", "heldout") for i in range(3)]


def log_samples(logger, log_samples=2):
    trainer = SimpleNamespace(loggers=[logger], current_epoch=1, global_step=7)
    GenerationValidation(log_samples=log_samples)._log_samples(trainer, ROWS)


def test_samples_go_to_a_csv_file_in_the_log_dir_of_folder_loggers(tmp_path):
    logger = L.pytorch.loggers.CSVLogger(str(tmp_path), name="logs")
    log_samples(logger)
    with open(Path(logger.log_dir) / "generations-epoch1.csv") as fh:
        samples = list(csv.DictReader(fh))
    assert [s["id"] for s in samples] == ["advbench-0", "advbench-1", "heldout-0", "heldout-1"]
    assert samples[0]["response"] == "A0\nmore" and samples[0]["refused"] == "True"


def test_samples_go_to_tensorboard_as_a_markdown_text_summary(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = L.pytorch.loggers.TensorBoardLogger(str(tmp_path), name="tb")
    log_samples(logger)
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("generations/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    assert event.step == 7 and text.startswith("| benchmark | id | subset |")
    assert "| advbench | advbench-0 |  | Q0 \\| why? | A0<br>more | eos | True |" in text
    assert not list(Path(logger.log_dir).glob("*.csv"))


def test_samples_go_to_mlflow_as_a_table_artifact():
    calls = []

    class RecordingMLFlowLogger(MLFlowLogger):  # mlflow itself need not be installed
        def __init__(self):
            pass

        @property
        def experiment(self):
            def log_table(run_id, data, artifact_file):
                calls.append((run_id, data, artifact_file))

            return SimpleNamespace(log_table=log_table)

        @property
        def run_id(self):
            return "run-1"

    log_samples(RecordingMLFlowLogger(), log_samples=1)
    ((run_id, data, artifact_file),) = calls
    assert (run_id, artifact_file) == ("run-1", "generations-epoch1.json")
    assert data["id"] == ["advbench-0", "heldout-0"] and list(data) == SAMPLE_COLUMNS


def test_samples_go_to_wandb_as_a_table(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = L.pytorch.loggers.WandbLogger(save_dir=str(tmp_path), offline=True, project="rt-test")
    try:
        log_samples(logger)
        run_dir = Path(logger.experiment.dir)
    finally:
        wandb.finish()
    (table,) = run_dir.glob("media/table/generations_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == SAMPLE_COLUMNS and [r[1] for r in content["data"]] == [
        "advbench-0", "advbench-1", "heldout-0", "heldout-1"]

import csv

import lightning as L

from rt_lightning.callbacks import GenerationValidation
from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.generation import GenerationConfig
from rt_lightning.model.module import ResponseTuningModule
from tests.support.files import write_jsonl


def test_generation_validation_logs_metrics_and_samples(tiny_model_dir, small_jsonl, tmp_path, capsys):
    advbench = tmp_path / "advbench.csv"
    advbench.write_text("goal,target\n" + "".join(f"Do harmful thing {i},Sure\n" for i in range(6)))
    val = write_jsonl(tmp_path / "val.jsonl", [{"instruction": f"Held-out {i}?", "response": "Yes."} for i in range(3)])
    data = SFTDataModule(train=str(small_jsonl), val=str(val), tokenizer=tiny_model_dir, batch_size=4)
    callback = GenerationValidation(benchmarks={"advbench": 6}, paths={"advbench": str(advbench)}, heldout=3,
                                    generation=GenerationConfig(max_new_tokens=4))
    logger = L.pytorch.loggers.CSVLogger(str(tmp_path), name="logs")
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=logger, callbacks=[callback], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    model = ResponseTuningModule(model=tiny_model_dir, quantize=None, lora_r=8, dtype="float32")
    trainer.fit(model, datamodule=data)
    with open(logger.log_dir + "/metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"gen/advbench/rr", "gen/advbench/stop_rate", "gen/heldout/mean_tokens", "gen/seconds", "val_loss"} <= logged
    epochs_with_rr = [r["epoch"] for r in rows if r.get("gen/advbench/rr")]
    assert epochs_with_rr == ["0", "1"]
    with open(logger.log_dir + "/generations-epoch1.csv") as fh:
        samples = list(csv.DictReader(fh))
    assert len(samples) == 9 and {s["benchmark"] for s in samples} == {"advbench", "heldout"}
    assert "GenerationValidation: 9 prompts" in capsys.readouterr().out

"""RunSummary: the lines a newcomer reads at the end of fit."""

from types import SimpleNamespace

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from rt_lightning.callbacks.run_summary import RunSummary


def test_summary_names_losses_metrics_files_and_the_next_command(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "checkpoints"))
    checkpoint.last_model_path = str(tmp_path / "checkpoints" / "last.ckpt")
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, global_step=30, is_global_zero=True,
                              callback_metrics={"val_loss": torch.tensor(2.5)}, callbacks=[checkpoint],
                              loggers=[SimpleNamespace(log_dir=str(tmp_path / "logs"))])
    summary = RunSummary()
    summary.on_validation_epoch_end(trainer, None)
    trainer.current_epoch, trainer.callback_metrics = 1, {"val_loss": torch.tensor(2.25),
                                                          "gen/advbench/refusal_rate": torch.tensor(0.125),
                                                          "gen/seconds": torch.tensor(12.0)}
    summary.on_validation_epoch_end(trainer, None)
    text = summary.render(trainer)
    assert "epoch 0: 2.5000, epoch 1: 2.2500" in text
    assert "advbench: refusal_rate 0.125" in text and "seconds" not in text
    assert str(tmp_path / "logs") in text
    assert f"python -m rt_lightning eval --model.ckpt_path {tmp_path / 'checkpoints' / 'last.ckpt'}" in text

"""Checkpoints: safe loading (no pickled code runs), one clear error for non-checkpoints, atomic writes, and resume
falling back past a damaged last.ckpt."""

import logging
import os
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from rt_lightning.data import SFTDataModule
from rt_lightning.model.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    find_resume_checkpoint,
    load_module_from_checkpoint,
    read_checkpoint,
)
from rt_lightning.model.module import ResponseTuningModule


class Payload:
    """Pickling this object makes loading it call ``os.system``: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir, tokenizer):
    root = tmp_path_factory.mktemp("run")
    rows = "".join(f'{{"instruction": "Q{i}?", "response": "Answer {i} is Paris."}}\n' for i in range(8))
    (root / "d.jsonl").write_text(rows)
    module = ResponseTuningModule(model=tiny_model_dir, quantize=None, dtype="float32", lora_r=4, lora_dropout=0.0,
                                  gradient_checkpointing=False, optimizer="adamw")
    data = SFTDataModule(train=str(root / "d.jsonl"), val=None, tokenizer=tiny_model_dir, batch_size=4,
                         cache_dir=str(root / "cache"))
    checkpoints = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=-1, every_n_epochs=1)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, callbacks=[checkpoints],
                        plugins=[AtomicCheckpointIO()], enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    return root


def test_a_real_checkpoint_loads_with_weights_only(trained_run):
    checkpoint = read_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    assert checkpoint["state_dict"] and "hyper_parameters" in checkpoint
    module = load_module_from_checkpoint(str(trained_run / "checkpoints" / "last.ckpt"))
    assert sum(p.requires_grad for p in module.parameters()) > 0
    assert not list((trained_run / "checkpoints").glob("*.tmp")), "no staging file is left behind"


def test_a_pickled_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"model": Payload(str(marker))}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="evil.ckpt: cannot be read safely"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"just some text\n", "not a PyTorch checkpoint"),
    (b'{"id": 1, "response": "x"}\n{"id": 2}\n', "not a PyTorch checkpoint"),
])
def test_files_that_are_not_checkpoints_get_one_clear_message(tmp_path, content, reason):
    path = tmp_path / "thing.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"thing.ckpt: {reason}"):
        read_checkpoint(path)


def test_a_torch_file_without_hyper_parameters_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="weights.pt: a torch file, but not a checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_resume_skips_a_damaged_last_checkpoint(trained_run, tmp_path, caplog):
    run = tmp_path / "copy"
    (run / "checkpoints").mkdir(parents=True)
    epoch = next((trained_run / "checkpoints").glob("epoch=1*.ckpt"))
    (run / "checkpoints" / epoch.name).write_bytes(epoch.read_bytes())
    time.sleep(0.01)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")  # a kill during the write
    with caplog.at_level(logging.WARNING, logger="rt_lightning"):
        found = find_resume_checkpoint(run)
    assert found == run / "checkpoints" / epoch.name
    assert "last.ckpt: empty file" in caplog.text
    assert find_resume_checkpoint(tmp_path / "nothing-here") is None


def test_an_interrupted_atomic_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"hyper_parameters": {}, "state_dict": {"a": torch.ones(1)}}, target)
    before = target.read_bytes()

    def torn_save(obj, fh):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped mid-write

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {}}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]

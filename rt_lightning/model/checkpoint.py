"""Checkpoints: written atomically in their own folder, read without running code, found again on resume.

* ``AtomicCheckpointIO`` writes each checkpoint to a temporary file *in the checkpoint folder*, fsyncs it and renames
  it over the target. Lightning's own writer stages through fsspec's temp dir; when that lies on another filesystem
  the final move is a copy, and a kill during it leaves a 0-byte or torn ``last.ckpt``.
* ``read_checkpoint`` loads with ``weights_only=True`` (no pickled code runs) and turns every way a file can fail
  to be a checkpoint (empty, text, JSONL, torn, a torch file without hyper-parameters) into one ``CheckpointError``
  that names the file.
* ``find_resume_checkpoint`` picks the newest *readable* checkpoint under a run folder (``last`` first), skipping a
  damaged ``last.ckpt`` with a warning.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rt_lightning.io import atomic_open
from rt_lightning.model.module import ResponseTuningModule

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A file that cannot be used as an rt_lightning checkpoint; the message names it and says why."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with an atomic write that never leaves the checkpoint's folder."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_open(path, "wb") as fh:
            torch.save(checkpoint, fh)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path``, loaded with ``weights_only=True``; ``CheckpointError`` if it is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (a checkpoint write was interrupted?)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (a checkpoint is a zip archive written by `fit`)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: cannot be read safely as a checkpoint: it holds pickled objects other than "
                              "weights and plain values, and loading them could run code (refused)") from err
    except Exception as err:  # torch raises RuntimeError, EOFError ... depending on the damage
        reason = str(err).splitlines()[0][:200]
        raise CheckpointError(f"{path}: cannot be read safely as a checkpoint ({type(err).__name__}: {reason})") from err
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: a torch file, but not a checkpoint written by `rt_lightning fit` "
                              "(no hyper_parameters/state_dict)")
    return checkpoint


def is_readable_checkpoint(path: Path) -> bool:
    try:
        read_checkpoint(path)
    except CheckpointError as err:
        log.warning("Skipping an unreadable checkpoint: %s", err)
        return False
    return True


def find_resume_checkpoint(root: str | Path) -> Optional[Path]:
    """The newest readable checkpoint under ``root`` (``last*.ckpt`` first among equally new ones); damaged files
    are skipped with a warning, so a ``last.ckpt`` torn by a kill falls back to the epoch checkpoint beside it.

    Lightning looks for ``last`` only in the checkpoint folder of the *current* logger version, which is a new,
    empty one when a killed run is restarted; searching the run's root finds the previous version's files.
    """
    files = [p for p in Path(root).rglob("*.ckpt") if p.is_file()]
    newest_first = sorted(files, key=lambda p: (p.stat().st_mtime, p.name.startswith("last")), reverse=True)
    return next((p for p in newest_first if is_readable_checkpoint(p)), None)


def load_module_from_checkpoint(ckpt_path: str, quantize: str | None = None,
                                device: str | torch.device | None = None) -> ResponseTuningModule:
    """Rebuild the module from the checkpoint's hyper-parameters and load its adapter.

    The base is loaded unquantised by default: the adapter was trained against the 4-bit base, but is applied to the
    bf16 one (the usual QLoRA practice, and the paper's). It stays unmerged: PEFT adds its output to each base layer's,
    in fp32, where merging would round base + adapter to bf16 and lose much of a short-trained adapter's change.
    ``device``: where the model is loaded (a 4-bit base must be quantised in place there); null = the CPU.
    """
    checkpoint = read_checkpoint(ckpt_path)
    # LightningCLI adds bookkeeping entries such as `_instantiator`; only constructor arguments are passed on.
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    hparams["quantize"] = quantize
    module = ResponseTuningModule(**hparams)
    module.load_device = torch.device(device) if device is not None else None
    module.configure_model()
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    return module

"""Rebuild a ``ResponseTuningModule`` from an adapter-only checkpoint written by ``fit``."""

from __future__ import annotations

import torch

from rt_lightning.model.module import ResponseTuningModule


def load_module_from_checkpoint(ckpt_path: str, quantize: str | None = None) -> ResponseTuningModule:
    """Rebuild the module from the checkpoint's hyper-parameters and load its adapter.

    The base is loaded unquantised by default: the adapter was trained against the 4-bit base, but is merged into
    the bf16 one (the usual QLoRA practice, and the paper's).
    """
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    # LightningCLI adds bookkeeping entries such as `_instantiator`; only constructor arguments are passed on.
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    hparams["quantize"] = quantize
    module = ResponseTuningModule(**hparams)
    module.configure_model()
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    return module

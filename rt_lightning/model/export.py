"""Turn an adapter-only Lightning checkpoint into a PEFT adapter folder, and optionally a merged HF model folder.

``python -m rt_lightning export --ckpt_path run/checkpoints/last.ckpt --output out/ [--merge]``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def load_module_from_checkpoint(ckpt_path: str, quantize: str | None = None):
    """Rebuild the module from the checkpoint's hyper-parameters and load its adapter.

    The base is loaded unquantised by default: the adapter was trained against the 4-bit base, but is merged into
    the bf16 one (paper-notes §8.10 — the usual QLoRA practice).
    """
    from rt_lightning.model.module import ResponseTuningModule

    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    # LightningCLI adds bookkeeping entries such as `_instantiator`; only constructor arguments are passed on.
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    hparams["quantize"] = quantize
    module = ResponseTuningModule(**hparams)
    module.configure_model()
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    return module


def export(ckpt_path: str, output: str, merge: bool = False) -> Path:
    from rt_lightning.model.loading import load_tokenizer

    module = load_module_from_checkpoint(ckpt_path)
    out = Path(output)
    module.save_adapter(str(out / "adapter"))
    tokenizer = load_tokenizer(module.hparams.model)
    tokenizer.save_pretrained(str(out / "adapter"))
    log.info("Adapter written to %s", out / "adapter")
    if merge:
        merged = module.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
        log.info("Merged model written to %s", out / "merged")
    return out


def export_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m rt_lightning export", description=__doc__)
    parser.add_argument("--ckpt_path", required=True, help="adapter-only checkpoint written by `fit`")
    parser.add_argument("--output", required=True, help="folder to write adapter/ (and merged/) into")
    parser.add_argument("--merge", action="store_true", help="also write the base with the adapter merged in")
    args = parser.parse_args(argv)
    export(args.ckpt_path, args.output, args.merge)

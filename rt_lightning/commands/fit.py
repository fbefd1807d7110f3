"""``fit`` and ``validate``: Lightning's own CLI over ``ResponseTuningModule`` and any ``SFTDataModule``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from jsonargparse import set_docstring_parse_options
from lightning.pytorch.cli import LightningCLI

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.model.module import ResponseTuningModule

# Dataclass attribute docstrings become `--help` text (litgpt does the same).
set_docstring_parse_options(attribute_docstrings=True)
log = logging.getLogger(__name__)


class RTLightningCLI(LightningCLI):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(ResponseTuningModule, SFTDataModule, *args, subclass_mode_data=True, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # test/predict are left out: the module has no test_step/predict_step (eval and inspect cover those needs).
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
                "validate": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser) -> None:
        # The data must be tokenised with the model's own tokenizer.
        parser.link_arguments("model.model", "data.init_args.tokenizer")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else None
        if config is not None and config.get("ckpt_path") == "last":
            found = find_last_checkpoint(config.trainer.default_root_dir or ".")
            if found is not None:
                log.info("--ckpt_path last → %s", found)
                config.ckpt_path = str(found)


def find_last_checkpoint(root: str) -> Optional[Path]:
    """The newest ``last*.ckpt`` under ``root``.

    Lightning looks for ``last`` only in the checkpoint folder of the *current* logger version, which is a new,
    empty one when a killed run is restarted; searching the run's root finds the previous version's file.
    """
    candidates = [p for p in Path(root).rglob("last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def main(argv: list[str]) -> None:
    """``argv`` starts with the subcommand (``fit`` or ``validate``)."""
    RTLightningCLI(args=argv)

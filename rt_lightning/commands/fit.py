"""``fit`` and ``validate``: Lightning's own CLI over ``ResponseTuningModule`` and any ``SFTDataModule``."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from jsonargparse import set_docstring_parse_options
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.model.checkpoint import AtomicCheckpointIO, find_resume_checkpoint
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
            found = find_resume_checkpoint(config.trainer.default_root_dir or ".")
            if found is not None:
                log.info("--ckpt_path last → %s", found)
                config.ckpt_path = str(found)

    def _instantiate_trainer(self, config: dict, callbacks: list):
        # Checkpoints are written atomically inside their own folder unless the config brings its own CheckpointIO.
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config = {**config, "plugins": [*plugins, AtomicCheckpointIO()]}
        return super()._instantiate_trainer(config, callbacks)


@contextmanager
def command_line(argv: list[str], prog: str = "python -m rt_lightning") -> Iterator[None]:
    """Run LightningCLI on ``argv`` as if it were the command line: given ``args`` while ``sys.argv`` holds other
    words, it warns that both were given."""
    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        yield
    finally:
        sys.argv = saved


def main(argv: list[str]) -> None:
    """``argv`` starts with the subcommand (``fit`` or ``validate``)."""
    with command_line(argv):
        RTLightningCLI()

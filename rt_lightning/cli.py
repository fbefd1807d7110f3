"""The LightningCLI for fit/validate/test/predict, and the ``inspect`` subcommand built on the same config."""

from __future__ import annotations

import argparse
import json
import logging
import sys
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


def inspect_main(argv: list[str]) -> None:
    """``python -m rt_lightning inspect --config x.yaml [--split train] [--limit N] [--output f.jsonl]``."""
    parser = argparse.ArgumentParser(prog="python -m rt_lightning inspect",
                                     description="Write one JSON object per example: the decoded input (text) and "
                                                 "the decoded tokens that carry loss (trainable_text). Other flags "
                                                 "(--config, --data.*, --model.model) are those of `fit`.")
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--output", default=None, help="JSONL file to write (default: stdout)")
    own, rest = parser.parse_known_args(argv)
    cli = RTLightningCLI(args=rest, run=False, trainer_defaults={"logger": False})
    write_inspection(cli.datamodule, own.split, own.limit, own.output)


def write_inspection(datamodule: SFTDataModule, split: str, limit: Optional[int], output: Optional[str]) -> int:
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    count = trained = 0
    try:
        for row in datamodule.inspect(split, limit):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()  # rows already written survive a later crash
            count += 1
            trained += row["num_trainable"]
    finally:
        if output:
            out.close()
    print(f"inspect: {count} examples, {trained} trainable tokens" + (f" → {output}" if output else ""),
          file=sys.stderr)
    return count

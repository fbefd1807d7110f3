"""The LightningCLI for fit/validate/test/predict, and the ``inspect`` subcommand built on the same config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from jsonargparse import set_docstring_parse_options
from lightning.pytorch.cli import LightningCLI

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.model.module import ResponseTuningModule

# Dataclass attribute docstrings become `--help` text (litgpt does the same).
set_docstring_parse_options(attribute_docstrings=True)


class RTLightningCLI(LightningCLI):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(ResponseTuningModule, SFTDataModule, *args, subclass_mode_data=True, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # The data must be tokenised with the model's own tokenizer.
        parser.link_arguments("model.model", "data.init_args.tokenizer")


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

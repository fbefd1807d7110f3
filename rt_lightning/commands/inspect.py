"""``inspect``: one JSON object per example with the decoded input and the decoded tokens that carry loss.

It takes every option of ``fit`` (``--config``, ``--data.*``, ``--model.model``) plus ``--split``, ``--limit`` and
``--output``, so what it shows is exactly what that ``fit`` would train on.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from typing import Literal, Optional

from rt_lightning.commands.fit import RTLightningCLI, command_line
from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.io import atomic_open


class InspectCLI(RTLightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--split", type=Literal["train", "val"], default="train", help="Which split to show.")
        parser.add_argument("--limit", type=Optional[int], default=None, help="Only the first N examples.")
        parser.add_argument("--output", type=Optional[str], default=None,
                            help="JSONL file to write (default: stdout); replaced only once every row is written.")


def write_inspection(datamodule: SFTDataModule, split: str, limit: Optional[int], output: Optional[str]) -> int:
    """Write the inspection rows; a file ``output`` is written aside and moved into place at the end, so a data
    error part-way leaves any previous output untouched."""
    count = trained = 0
    with atomic_open(output) if output else nullcontext(sys.stdout) as out:
        for row in datamodule.inspect(split, limit):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
            trained += row["num_trainable"]
    print(f"inspect: {count} examples, {trained} trainable tokens" + (f" → {output}" if output else ""),
          file=sys.stderr)
    return count


def main(argv: list[str]) -> None:
    with command_line(argv, prog="python -m rt_lightning inspect"):
        cli = InspectCLI(run=False, trainer_defaults={"logger": False})
    write_inspection(cli.datamodule, cli.config.split, cli.config.limit, cli.config.output)

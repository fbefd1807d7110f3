"""``reproduce``: the paper's grid (untuned / IT / RT / rt_empty / refusal-augmented arms) trained with ``fit``,
evaluated with ``eval`` and reported with one verdict per claim. Resumable: run the same command again."""

from __future__ import annotations

import shlex
from dataclasses import fields
from typing import Optional

from jsonargparse import ActionConfigFile, ArgumentParser

from rt_lightning.reproduce.preset import Budget, EvalSettings, Preset
from rt_lightning.reproduce.run import reproduce


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="python -m rt_lightning reproduce", description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="A preset YAML, e.g. configs/reproduce/tiny.yaml.")
    parser.add_class_arguments(Preset, None, sub_configs=True)  # the preset's fields at the top level of its YAML
    parser.add_argument("--arms", type=Optional[list[str]], default=None, help="Run only these arms (names as planned).")
    parser.add_argument("--dry_run", type=bool, default=False, help="Print the plan and its estimated cost, run nothing.")
    config = parser.parse_args(argv)
    # Built by hand, not by parser.instantiate: that would also instantiate the class_paths inside the `fit` config,
    # which must reach `fit` as plain YAML.
    values = config.as_dict()
    preset = Preset(**{f.name: values[f.name] for f in fields(Preset)})
    preset.eval, preset.budget = EvalSettings(**values["eval"]), Budget(**values["budget"])
    reproduce(preset, config.arms, config.dry_run, command="python -m rt_lightning reproduce " + shlex.join(argv))

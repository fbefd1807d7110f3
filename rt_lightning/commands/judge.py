"""``judge``: LLM-judge the rows that ``eval`` wrote (refusal, pairwise or JustEval aspects), resumably."""

from __future__ import annotations

import logging

from jsonargparse import auto_cli, set_parsing_settings

from rt_lightning.eval.judge.run import run_judge

log = logging.getLogger(__name__)


def _renamed_task_flag(argv: list[str]) -> list[str]:
    """``--task NAME`` (before the judges became classes) still works: it is ``--judge NAME`` now."""
    out = []
    for arg in argv:
        if arg == "--task" or arg.startswith("--task="):
            log.warning("judge: --task is now --judge (e.g. --judge refusal); reading it as --judge")
            arg = "--judge" + arg[len("--task"):]
        out.append(arg)
    return out


def main(argv: list[str]) -> None:
    # The client's settings are a dataclass documented field by field.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    auto_cli(run_judge, args=_renamed_task_flag(argv), as_positional=False, prog="python -m rt_lightning judge")

"""``judge``: LLM-judge the rows that ``eval`` wrote (refusal, pairwise or JustEval aspects), resumably."""

from __future__ import annotations

from jsonargparse import auto_cli

from rt_lightning.eval.judge.run import run_judge


def main(argv: list[str]) -> None:
    auto_cli(run_judge, args=argv, as_positional=False)

"""``eval``: generate for benchmarks (or score a file of responses) and score them, resumably."""

from __future__ import annotations

from jsonargparse import auto_cli

from rt_lightning.eval.runner import evaluate


def main(argv: list[str]) -> None:
    auto_cli(evaluate, args=argv, as_positional=False)

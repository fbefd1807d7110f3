"""``export-alpaca-eval``: write AlpacaEval's ``model_outputs.json`` from an ``eval`` results file."""

from __future__ import annotations

from jsonargparse import auto_cli

from rt_lightning.eval.alpaca_eval import to_alpaca_eval


def main(argv: list[str]) -> None:
    count = auto_cli(to_alpaca_eval, args=argv, as_positional=False, prog="python -m rt_lightning export-alpaca-eval")
    print(f"wrote {count} AlpacaEval outputs")

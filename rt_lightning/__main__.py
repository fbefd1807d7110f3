"""``python -m rt_lightning fit|validate|test|predict --config …`` (LightningCLI), and the tools built on the same
pieces: ``inspect`` (what is trained), ``eval`` (benchmarks), ``judge`` (LLM judges), ``export`` (adapter / merged
model), ``export-alpaca-eval`` (AlpacaEval model_outputs.json)."""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> None:
    from rich.logging import RichHandler

    # Our own logger only: Lightning already prints its messages through its own handler.
    package_log = logging.getLogger("rt_lightning")
    package_log.setLevel(logging.INFO)
    package_log.addHandler(RichHandler(show_path=False))
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    if command == "inspect":
        from rt_lightning.cli import inspect_main

        inspect_main(argv[1:])
    elif command == "eval":
        from rt_lightning.eval.runner import eval_main

        eval_main(argv[1:])
    elif command == "judge":
        from rt_lightning.eval.judge_cli import judge_main

        judge_main(argv[1:])
    elif command == "export-alpaca-eval":
        from rt_lightning.eval.exports import alpaca_eval_export_main

        alpaca_eval_export_main(argv[1:])
    elif command == "export":
        from rt_lightning.model.export import export_main

        export_main(argv[1:])
    else:
        from rt_lightning.cli import RTLightningCLI

        RTLightningCLI(args=argv)


if __name__ == "__main__":
    main()

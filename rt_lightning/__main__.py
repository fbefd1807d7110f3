"""``python -m rt_lightning fit|validate|test|predict --config …`` (LightningCLI), ``inspect``, ``eval``, ``export``."""

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
    elif command == "export":
        from rt_lightning.model.export import export_main

        export_main(argv[1:])
    else:
        from rt_lightning.cli import RTLightningCLI

        RTLightningCLI(args=argv)


if __name__ == "__main__":
    main()

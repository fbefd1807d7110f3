"""``python -m rt_lightning CMD ...``: one dispatcher for every command; ``--help`` lists them, ``CMD --help``
documents each option. Every command parses with jsonargparse (``fit`` and ``validate`` through LightningCLI)."""

from __future__ import annotations

import importlib
import logging
import sys

from rt_lightning.host_memory import reuse_freed_memory
from rt_lightning.quiet import quiet_library_notices

COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("fit", "Train: QLoRA/LoRA fine-tuning on IT, RT or refusal-augmented data (LightningCLI)."),
    "validate": ("fit", "Validation loss (and the generation callback's metrics) of a config or checkpoint."),
    "inspect": ("inspect", "Write what is trained, per example: the rendered text and the tokens that carry loss."),
    "eval": ("eval", "Generate for benchmarks (or score a file of responses) and score them, resumably."),
    "judge": ("judge", "LLM-judge eval outputs: refusal, pairwise (RT vs IT) or JustEval aspects, resumably."),
    "reproduce": ("reproduce", "The paper's grid end to end: train arms, evaluate, report verdicts (resumable)."),
    "export": ("export", "Turn an adapter-only checkpoint into a PEFT adapter folder and/or a merged HF model."),
    "export-alpaca-eval": ("export_alpaca_eval", "Write AlpacaEval's model_outputs.json from an eval results file."),
}
"""Command name → (module under ``rt_lightning.commands``, one-line summary)."""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m rt_lightning COMMAND [options]   (python -m rt_lightning COMMAND --help)", "",
             "Response Tuning vs instruction tuning of pre-trained LLMs (Lightning + QLoRA).", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def _configure_logging() -> None:
    from rich.logging import RichHandler

    # Our own logger only (Lightning prints through its own handler), and once, however often main() is called.
    package_log = logging.getLogger("rt_lightning")
    package_log.setLevel(logging.INFO)
    if not any(isinstance(h, RichHandler) for h in package_log.handlers):
        package_log.addHandler(RichHandler(show_path=False))


def main(argv: list[str] | None = None) -> None:
    quiet_library_notices()  # before any command module: bitsandbytes warns while it is imported
    reuse_freed_memory()  # before the first large tensor: +6.7% on CPU training (see host_memory.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"rt_lightning: unknown command {command!r}\n\n{usage()}")
    _configure_logging()
    # Only the chosen command is imported: `--help` stays instant, and `judge` never loads torch models.
    module = importlib.import_module(f"rt_lightning.commands.{COMMANDS[command][0]}")
    module.main([command, *rest] if module.__name__.endswith(".fit") else rest)


if __name__ == "__main__":
    main()

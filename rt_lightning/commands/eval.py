"""``eval``: generate for benchmarks (or score a file of responses) and score them, resumably."""

from __future__ import annotations

import logging

from jsonargparse import auto_cli, set_parsing_settings

from rt_lightning.eval.runner import evaluate

log = logging.getLogger(__name__)

FLAT_FLAGS = {
    "--model": "--model.base", "--adapter": "--model.adapter", "--ckpt_path": "--model.ckpt_path",
    "--quantize": "--model.quantize", "--dtype": "--model.dtype", "--device": "--model.device",
    "--template": "--prompt.template", "--icl": "--prompt.icl", "--icl_prompt": "--prompt.icl_prompt",
    "--data_root": "--data.root", "--paths": "--data.paths", "--limit": "--data.limit",
}
"""The flags of ``eval`` before its options were grouped, and the grouped option each one sets. ``--model`` thus
names the base model, as it always did, not a config file for the ``model`` group."""


def grouped_flags(argv: list[str]) -> list[str]:
    """``argv`` with every flat flag (``--data_root x``, ``--data_root=x``) renamed to its grouped option."""
    renamed, old = [], []
    for arg in argv:
        flag, sep, value = arg.partition("=")
        if flag in FLAT_FLAGS:
            old.append(flag)
            arg = FLAT_FLAGS[flag] + sep + value
        renamed.append(arg)
    if old:
        log.warning("eval: %s", "; ".join(f"{flag} is now {FLAT_FLAGS[flag]}" for flag in dict.fromkeys(old)))
    return renamed


def main(argv: list[str]) -> None:
    # The option groups (model, data, prompt, generation) are dataclasses documented field by field.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    auto_cli(evaluate, args=grouped_flags(argv), as_positional=False, prog="python -m rt_lightning eval")

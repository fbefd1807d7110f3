"""``export``: turn an adapter-only checkpoint into a PEFT adapter folder, and optionally a merged HF model folder."""

from __future__ import annotations

import logging
from pathlib import Path

from jsonargparse import auto_cli

from rt_lightning.hub import load_tokenizer
from rt_lightning.model.checkpoint import load_module_from_checkpoint

log = logging.getLogger(__name__)


def export(ckpt_path: str, output: str, merge: bool = False) -> Path:
    """Write ``<output>/adapter`` (PEFT folder + tokenizer) and, with ``merge``, ``<output>/merged`` (full HF model).

    Args:
        ckpt_path: Adapter-only checkpoint written by ``fit``.
        output: Folder to write ``adapter/`` (and ``merged/``) into.
        merge: Also write the bf16 base with the adapter merged in.
    """
    module = load_module_from_checkpoint(ckpt_path)
    out = Path(output)
    module.save_adapter(str(out / "adapter"))
    tokenizer = load_tokenizer(module.hparams.model)
    tokenizer.save_pretrained(str(out / "adapter"))
    log.info("Adapter written to %s", out / "adapter")
    if merge:
        merged = module.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
        log.info("Merged model written to %s", out / "merged")
    return out


def main(argv: list[str]) -> None:
    auto_cli(export, args=argv, as_positional=False, prog="python -m rt_lightning export")

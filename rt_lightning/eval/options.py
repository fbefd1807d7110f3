"""The option groups of ``python -m rt_lightning eval``: what model to load, how to prompt it, and where the
benchmarks' prompts come from. jsonargparse shows each group as nested options (``--model.base``,
``--prompt.icl``, ``--data.root`` ...) documented by the field docstrings below. The flat flags of earlier
versions (``--model``, ``--data_root`` ...) still set these options: ``rt_lightning.commands.eval`` renames them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelSource:
    """The model to generate with: a base model with an optional PEFT adapter, or a ``fit`` checkpoint."""

    base: Optional[str] = None
    """Base model: hub id, local folder or ``embedded:gemma-3-270m``. Flat flag: ``--model``."""
    adapter: Optional[str] = None
    """A PEFT adapter folder to put on the base (``export`` writes one). Flat flag: ``--adapter``."""
    ckpt_path: Optional[str] = None
    """An adapter-only checkpoint from ``fit``, instead of ``base`` (its hyper-parameters name the base model).
    Flat flag: ``--ckpt_path``."""
    quantize: Optional[str] = None
    """``nf4`` to load the base in 4-bit. Flat flag: ``--quantize``."""
    dtype: str = "bfloat16"
    """Dtype of the base weights. Flat flag: ``--dtype``."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:1`` ... Flat flag: ``--device``."""

    @property
    def given(self) -> bool:
        return bool(self.base or self.ckpt_path)


@dataclass
class PromptFormat:
    """How an instruction becomes the model's prompt."""

    template: str = "tulu"
    """Prompt format: ``tulu`` (``<|user|>\\n{instruction}\\n<|assistant|>\\n``, the paper's) or ``chat``.
    Flat flag: ``--template``."""
    icl: Optional[str] = None
    """In-context setting for an untuned base model instead of ``template``: zeroshot, urial or urial_r (stops at
    ``# Query:``/``# Answer:``/``# Instruction``, trailing backticks stripped). Flat flag: ``--icl``."""
    icl_prompt: Optional[str] = None
    """The URIAL prompt file (urial, urial_r) or a 0-shot template file; ``{instruction}`` is filled in.
    Flat flag: ``--icl_prompt``."""


@dataclass
class BenchmarkSource:
    """Where the benchmarks' prompts are read from (default: their hub datasets)."""

    root: Optional[str] = None
    """A folder laid out like ``../shared/data``; benchmarks load from there instead of the hub.
    Flat flag: ``--data_root``."""
    paths: dict[str, str] = field(default_factory=dict)
    """Per-benchmark local files, overriding ``root`` (``{"ifeval": "my.jsonl"}``). Flat flag: ``--paths``."""
    limit: Optional[int] = None
    """First N prompts of each benchmark (of each subset for two-sided sets such as XSTest). Flat flag: ``--limit``."""
    limits: dict[str, int] = field(default_factory=dict)
    """Per-benchmark limits overriding ``limit`` (``{"xstest": 450, "ifeval": 24}``): one call can then evaluate
    benchmarks at different sizes, generating for all of them in shared batches."""

    def limit_of(self, benchmark: str) -> Optional[int]:
        """How many prompts of ``benchmark`` to take (per subset): its own limit, else ``limit``, else all."""
        return self.limits.get(benchmark, self.limit)

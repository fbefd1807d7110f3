"""A reproduction preset (one YAML under ``configs/reproduce/``) and the grid of arms it expands to.

An *arm* is one model to evaluate: the untuned base under a prompt (0-shot Tulu, URIAL, URIAL-R), or a model trained
with ``fit`` in one mode (it, rt, rt_empty), optionally with N refusals mixed in. The preset says which arms exist,
how ``fit`` and ``eval`` are configured for all of them, and the throughput figures the dry-run plan budgets with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


@dataclass
class EvalSettings:
    benchmarks: dict[str, Optional[int]] = field(default_factory=lambda: {"xstest": None})
    """Benchmark name → prompts per subset (null: all), e.g. ``{advbench: 100, xstest: null, response_ranking: 200}``."""
    data_root: Optional[str] = None
    """Folder laid out like ``../shared/data``; null loads benchmarks from the hub."""
    paths: dict[str, str] = field(default_factory=dict)
    """Per-benchmark local files, overriding ``data_root``."""
    max_new_tokens: int = 256
    """New tokens per prompt at most (the paper: 2,048)."""
    batch_size: int = 16
    """Prompts per generation batch."""
    extra_args: list[str] = field(default_factory=list)
    """More ``eval`` flags for every arm (e.g. ``--dtype float32``)."""


@dataclass
class Budget:
    """Throughput figures the ``--dry_run`` plan turns into minutes (measure them with ``bench/``)."""

    train_tokens_per_second: float = 400.0
    generated_tokens_per_second: float = 150.0
    mean_generated_tokens: float = 100.0
    """Expected new tokens per prompt (below max_new_tokens: rows stop early)."""
    scored_tokens_per_second: float = 2000.0
    """Forward-only tokens/s (reference NLL, response ranking)."""
    overhead_seconds_per_arm: float = 30.0
    """Model loading and process start-up per arm and step."""


@dataclass
class Preset:
    name: str
    """Folder name under ``output_root`` and title of the report."""
    model: str
    """The base model of every arm: hub id, local folder or ``embedded:gemma-3-270m``."""
    fit: dict[str, Any] = field(default_factory=dict)
    """``fit`` settings (trainer, model, data) for trained arms, on top of ``fit_configs``; each arm then sets its
    mode, refusal mixture, run folders and checkpointing."""
    fit_configs: list[str] = field(default_factory=list)
    """``fit`` config files the arms start from (e.g. ``configs/quickstart.yaml``), in order."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    modes: list[str] = field(default_factory=lambda: ["it", "rt", "rt_empty"])
    """Trained arms without refusals (N=0)."""
    refusal_modes: list[str] = field(default_factory=lambda: ["it", "rt"])
    """Modes that also get refusal-augmented arms."""
    refusal_counts: list[int] = field(default_factory=lambda: [100, 200, 500])
    """N > 0 refusals mixed into the base data (N = 0 is the plain arm of that mode)."""
    refusals_source: Optional[str] = None
    """File or hub id of refusal examples (Safety-Tuned LLaMAs ``safety_only_data_Instructions.json``)."""
    icl: list[str] = field(default_factory=lambda: ["tulu", "urial", "urial_r"])
    """Untuned arms: ``tulu`` (0-shot with the training template), ``zeroshot``, ``urial``, ``urial_r``."""
    icl_prompt: Optional[str] = None
    """The URIAL prompt file (URIAL-R is derived from it)."""
    train_examples: int = 1000
    """Base training examples per arm (for the plan's cost estimate)."""
    mean_train_tokens: float = 400.0
    """Mean tokens per training example (for the plan's cost estimate)."""
    output_root: str = "runs/reproduce"
    sample_ids: list[str] = field(default_factory=list)
    """Eval row ids whose generations the report shows for every arm (the same fixed prompts)."""
    budget: Budget = field(default_factory=Budget)


@dataclass(frozen=True)
class Arm:
    name: str
    mode: Optional[str] = None
    """Training mode; None for an untuned arm."""
    refusals: int = 0
    prompt: str = "tulu"
    """How prompts are built at eval: ``tulu`` (training template) or an in-context setting."""

    @property
    def trained(self) -> bool:
        return self.mode is not None


def build_arms(preset: Preset) -> list[Arm]:
    """Every arm of the grid, untuned ones first, in a stable order (the report follows it)."""
    arms = [Arm(f"untuned-{prompt}", prompt=prompt) for prompt in preset.icl]
    arms += [Arm(mode, mode=mode) for mode in preset.modes]
    for count in preset.refusal_counts:
        if count <= 0:
            continue
        arms += [Arm(f"{mode}-refusals{count}", mode=mode, refusals=count) for mode in preset.refusal_modes]
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"preset {preset.name!r} expands to duplicate arm names: {names}")
    return arms


def select_arms(arms: list[Arm], wanted: Optional[list[str]]) -> list[Arm]:
    if not wanted:
        return arms
    known = {a.name: a for a in arms}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; this preset has {list(known)}")
    return [known[w] for w in wanted]


PUBLISHED_SIZES = {"advbench": 520, "harmbench": 300, "malicious_instruct": 100, "xstest": 450, "ifeval": 541,
                   "alpaca_eval": 805, "just_eval": 1000, "mt_bench": 80, "response_ranking": 805}
"""Prompts per benchmark, for the plan of a benchmark run in full (``null`` limit)."""


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def merged_fit_settings(preset: Preset) -> dict:
    """``fit_configs`` then ``fit``, merged key by key as LightningCLI does (for the plan only)."""
    merged: dict = {}
    for path in preset.fit_configs:
        file = Path(path)
        if file.is_file():
            merged = _merge(merged, yaml.safe_load(file.read_text(encoding="utf-8")) or {})
    return _merge(merged, preset.fit)


def estimate_seconds(preset: Preset, arm: Arm) -> dict[str, float]:
    """Rough cost of an arm from the preset's budget: training, generation and forward-only scoring."""
    budget, settings = preset.budget, preset.eval
    epochs = float(merged_fit_settings(preset).get("trainer", {}).get("max_epochs", 1) or 1)
    train = 0.0
    if arm.trained:
        examples = preset.train_examples + arm.refusals
        train = epochs * examples * preset.mean_train_tokens / budget.train_tokens_per_second
    sizes = {name: min(n, PUBLISHED_SIZES.get(name, n)) if n is not None else PUBLISHED_SIZES.get(name, 500)
             for name, n in settings.benchmarks.items()}
    prompts = sum(n for name, n in sizes.items() if name != "response_ranking")
    generate = prompts * min(budget.mean_generated_tokens, settings.max_new_tokens) / budget.generated_tokens_per_second
    ranking = sizes.get("response_ranking", 0)
    score = 2 * ranking * 400 / budget.scored_tokens_per_second
    overhead = budget.overhead_seconds_per_arm * (2 if arm.trained else 1)
    return {"train": train, "generate": generate, "score": score, "overhead": overhead,
            "total": train + generate + score + overhead}

"""The reports of an ``eval`` output folder: ``metrics.json`` (every benchmark's summary) and ``summary.md`` (the
same as a Markdown table), both written atomically so a kill leaves the old file or the new one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rt_lightning.eval.benchmarks import BENCHMARKS
from rt_lightning.io import atomic_write_json, atomic_write_text, read_jsonl

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.md"


def read_metrics(output_dir: Path) -> dict:
    """The metrics of earlier runs into ``output_dir``, to which this run adds its benchmarks.

    An unreadable ``metrics.json`` (e.g. edited by hand) is not fatal: the summaries are recomputed from the
    results files next to it, which hold every scored row (without the ``missing`` counts, which need the
    benchmarks' data; rerunning a benchmark restores its count).
    """
    path = output_dir / METRICS_FILE
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError(f"expected a JSON object, found {type(metrics).__name__}")
        return metrics
    except (UnicodeDecodeError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        log.warning("%s is unreadable (%s); recomputing it from the results files in %s", path, err, output_dir)
        return recompute_metrics(output_dir)


def recompute_metrics(output_dir: Path) -> dict:
    """Summaries of every ``<benchmark>.jsonl`` results file in ``output_dir``."""
    metrics = {}
    for name, benchmark in BENCHMARKS.items():
        results = output_dir / f"{name}.jsonl"
        if results.exists():
            metrics[name] = benchmark.summarize(read_jsonl(results))
    return metrics


def write_metrics(output_dir: Path, metrics: dict) -> None:
    atomic_write_json(output_dir / METRICS_FILE, metrics)


def write_summary(output_dir: Path, metrics: dict) -> None:
    atomic_write_text(output_dir / SUMMARY_FILE, markdown_summary(metrics))


def markdown_summary(metrics: dict) -> str:
    lines = ["# Evaluation summary", "", "| benchmark | n | metric | value |", "|---|---|---|---|"]
    for name, values in metrics.items():
        for key, value in values.items():
            if key == "n":
                continue
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"| {name} | {values.get('n', '')} | {key} | {shown} |")
    return "\n".join(lines) + "\n"

"""The ``reproduce`` driver: plan the grid, run its arms in order, then collect, judge and report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rt_lightning.io import atomic_write_json, atomic_write_text
from rt_lightning.reproduce.paper import SOURCE, TABLE_15_LIMA
from rt_lightning.reproduce.pipeline import arm_dir, run_arm, run_root
from rt_lightning.reproduce.plots import all_figures
from rt_lightning.reproduce.preset import Arm, Preset, build_arms, estimate_seconds, select_arms
from rt_lightning.reproduce.report import render
from rt_lightning.reproduce.results import collect
from rt_lightning.reproduce.verdicts import all_verdicts

log = logging.getLogger(__name__)


def plan(preset: Preset, arms: list[Arm]) -> str:
    """What would run, and the budget the preset's throughput figures give it."""
    lines = [f"Preset {preset.name}: model {preset.model}, {len(arms)} arm(s) → {run_root(preset)}", "",
             f"{'arm':<22}{'trained':<9}{'N':>5}  {'prompt':<9}{'fit min':>9}{'eval min':>10}{'state':>12}"]
    total = 0.0
    for arm in arms:
        cost = estimate_seconds(preset, arm)
        folder = arm_dir(preset, arm)
        state = "done" if (folder / "eval.done").is_file() else "fit done" if (folder / "fit.done").is_file() \
            else "started" if folder.exists() else "to do"
        if state != "done":
            total += cost["total"]
        lines.append(f"{arm.name:<22}{'yes' if arm.trained else 'no':<9}{arm.refusals:>5}  {arm.prompt:<9}"
                     f"{cost['train'] / 60:>9.1f}{(cost['generate'] + cost['score'] + cost['overhead']) / 60:>10.1f}"
                     f"{state:>12}")
    benchmarks = ", ".join(f"{k}={'all' if v is None else v}" for k, v in preset.eval.benchmarks.items())
    lines += ["", f"Benchmarks (prompts per subset): {benchmarks}; max_new_tokens {preset.eval.max_new_tokens}",
              f"Estimated wall time still to run: {total / 60:.0f} min ({total / 3600:.2f} h)"]
    return "\n".join(lines)


def report(preset: Preset, arms: list[Arm], command: str) -> dict:
    """Write results.json, report.md and the figures for the arms that exist so far."""
    root = run_root(preset)
    results = collect(preset, arms, {"table_15_lima": TABLE_15_LIMA, "source": SOURCE})
    results["verdicts"] = all_verdicts(results)
    timings = {a.name: json.loads((arm_dir(preset, a) / "timings.json").read_text())
               for a in arms if (arm_dir(preset, a) / "timings.json").is_file()}
    atomic_write_json(root / "results.json", results)
    atomic_write_json(root / "timings.json", timings)
    all_figures(results, root)
    atomic_write_text(root / "report.md", render(results, timings, command))
    return results


def reproduce(preset: Preset, arms: list[str] | None = None, dry_run: bool = False, command: str = "") -> dict | None:
    grid = build_arms(preset)
    chosen = select_arms(grid, arms)
    print(plan(preset, chosen))
    if dry_run:
        return None
    for arm in chosen:
        run_arm(preset, arm)
    # The report covers every arm of the grid that has results, not only this run's subset.
    done = [a for a in grid if (arm_dir(preset, a) / "eval").is_dir()]
    results = report(preset, done, command)
    log.info("Report: %s", Path(run_root(preset)) / "report.md")
    return results

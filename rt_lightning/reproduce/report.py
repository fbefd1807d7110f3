"""``report.md`` from ``results.json``: tables with 95% bootstrap CIs, the paper's figures beside ours, samples,
training curves, wall times and one verdict per claim."""

from __future__ import annotations

from typing import Optional

from rt_lightning.reproduce.paper import PAPER_COUNTS, SOURCE, TABLE_15_LIMA
from rt_lightning.reproduce.results import METRICS, METRICS_BY_NAME

HELPFUL_ARMS = ("untuned-tulu", "it", "rt", "rt_empty")
ICL_ARMS = ("untuned-tulu", "untuned-urial", "untuned-urial_r")


def _cell(entry: Optional[dict], key: str = "value") -> str:
    if not entry or entry.get(key) is None:
        return "–"
    low, high = entry.get("ci") or (None, None)
    ci = f" [{low:.3f}, {high:.3f}]" if None not in (low, high) else ""
    return f"{entry[key]:.3f}{ci}"


def _table(results: dict, arms: tuple[str, ...], metrics: list[str]) -> list[str]:
    present = [a for a in arms if a in results["arms"]]
    lines = ["| metric | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
    for m in metrics:
        cells = [_cell(results["arms"][a]["metrics"].get(m)) for a in present]
        if any(c != "–" for c in cells):
            lines.append(f"| {METRICS_BY_NAME[m].label} | " + " | ".join(cells) + " |")
    return lines


def _ratios(results: dict, pair: str, metrics: list[str]) -> list[str]:
    comparison = results.get("comparisons", {}).get(pair, {})
    cells = [f"| {METRICS_BY_NAME[m].label} | {_cell(comparison.get(m), 'ratio')} |" for m in metrics if m in comparison]
    return [f"| metric | {pair} (ratio, 95% CI) |", "|---|---|", *cells] if cells else [f"({pair}: not measured)"]


def render(results: dict, timings: dict[str, dict], command: str) -> str:
    helpful = [m.name for m in METRICS if m.section == "helpfulness"]
    lines = [f"# Reproduction: {results['preset']}", "",
             f"Model: `{results['model']}`. Made by `{command}`. Every interval is a 95% percentile bootstrap over "
             "prompts (seed 0). Refusals are judged by the model-free classifier (`rt_lightning/eval/scoring/refusal.py`).",
             "", "## Verdicts", ""]
    lines += [f"- **{v['claim']}: {v['verdict']}.** {v['evidence']}" for v in results.get("verdicts", [])]
    lines += ["", "## (a) Helpfulness without a judge", "", *_table(results, HELPFUL_ARMS, helpful), "",
              *_ratios(results, "rt/it", helpful), "", *_ratios(results, "rt_empty/it", helpful), "",
              "![helpfulness](helpfulness.png)", "", "## (b) Safety: refusal rate vs refusal examples N", ""]
    lines += ["| mode | N | avg RR | XSTest-safe FRR | AdvBench | HarmBench | MaliciousInstruct | XSTest-unsafe |",
              "|---|---|---|---|---|---|---|---|"]
    for mode, per_n in results.get("safety", {}).items():
        for n, m in per_n.items():
            lines.append(f"| {mode.upper()} | {n} | " + " | ".join(_cell(m.get(k)) for k in (
                "rr_avg", "frr_xstest_safe", "rr_advbench", "rr_harmbench", "rr_malicious_instruct",
                "rr_xstest_unsafe")) + " |")
    for mode, effect in results.get("refusal_effect", {}).items():
        if effect:
            lines.append(f"\n{mode.upper()}: N={effect['n_refusals']} vs 0: avg RR rise "
                         f"{_cell(effect['rr_rise'], 'difference')}, FRR rise {_cell(effect['frr_rise'], 'difference')}, "
                         f"RR-FRR gap rise {_cell(effect['selectivity_rise'], 'difference')}.")
    lines += ["", f"The paper ({SOURCE}; N = {'/'.join(map(str, PAPER_COUNTS))}; judged by an LLM):", "",
              "| model | mode | avg RR | FRR |", "|---|---|---|---|"]
    for model, modes in TABLE_15_LIMA.items():
        for mode, figures in modes.items():
            lines.append(f"| {model} | {mode.upper()} | {' / '.join(f'{v:.2f}' for v in figures['rr_avg'])} | "
                         f"{' / '.join(f'{v:.2f}' for v in figures['frr'])} |")
    lines += ["", "![refusal rate vs N](refusal_vs_n.png)", "", "## (c) In context: 0-shot vs URIAL vs URIAL-R", "",
              *_table(results, ICL_ARMS, [m.name for m in METRICS]), "",
              *_ratios(results, "untuned-urial_r/untuned-urial", [m.name for m in METRICS]), "",
              "![in context](in_context.png)", "", "## (d) Training curves, wall times and samples", "",
              "| arm | final train loss (epoch) | val loss per epoch | wall: fit | wall: eval |", "|---|---|---|---|---|"]
    for arm, entry in results["arms"].items():
        curve, t = entry.get("curve") or {}, timings.get(arm, {})
        final = f"{curve['train_epoch'][-1][1]:.3f}" if curve.get("train_epoch") else "–"
        val = ", ".join(f"{v:.3f}" for _, v in curve.get("val_epoch", [])) or "–"
        lines.append(f"| {arm} | {final} | {val} | {_minutes(t.get('fit'))} | {_minutes(t.get('eval'))} |")
    lines += ["", "![training curves](training_curves.png)", "", "### Samples (the same prompts for every arm)"]
    for arm, entry in results["arms"].items():
        for row_id, sample in entry.get("samples", {}).items():
            text = sample["response"].replace("\n", " ").strip() or "(empty)"
            lines.append(f"- **{arm}**, `{row_id}` ({sample['instruction'][:80]!r}): {text[:300]}")
    return "\n".join(lines) + "\n"


def _minutes(seconds: Optional[float]) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"

"""The report's figures, drawn from ``results.json`` alone (the notebook calls the same functions)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the machines this runs on
import matplotlib.pyplot as plt  # noqa: E402

from rt_lightning.reproduce.paper import PAPER_COUNTS, SOURCE, TABLE_15_LIMA  # noqa: E402

HELPFUL_ARMS = ("untuned-tulu", "it", "rt", "rt_empty")
ICL_ARMS = ("untuned-tulu", "untuned-urial", "untuned-urial_r")


def _bars(ax, results: dict, arms: tuple[str, ...], metrics: tuple[str, ...], title: str) -> None:
    present = [a for a in arms if a in results["arms"]]
    width = 0.8 / max(len(present), 1)
    for i, arm in enumerate(present):
        values, errors = [], [[], []]
        for m in metrics:
            entry = results["arms"][arm]["metrics"].get(m) or {}
            value, (low, high) = entry.get("value"), entry.get("ci", [None, None])
            values.append(value if value is not None else 0.0)
            errors[0].append(value - low if None not in (value, low) else 0.0)
            errors[1].append(high - value if None not in (value, high) else 0.0)
        ax.bar([j + i * width for j in range(len(metrics))], values, width, yerr=errors, capsize=3, label=arm)
    ax.set_xticks([j + width * (len(present) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([m.replace("_", "\n", 1) for m in metrics], fontsize=8)
    ax.set_title(title)
    ax.legend(fontsize=8)


def helpfulness(results: dict, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    _bars(left, results, HELPFUL_ARMS, ("ifeval_prompt_strict", "ifeval_inst_strict", "ifeval_prompt_loose",
                                        "ifeval_inst_loose", "response_ranking", "stop_rate"), "Higher is better")
    _bars(right, results, HELPFUL_ARMS, ("reference_nll",), "Reference NLL per token (lower is better)")
    fig.suptitle(f"{results['preset']}: helpfulness without a judge (95% bootstrap CIs)")
    return _save(fig, path)


def in_context(results: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    _bars(ax, results, ICL_ARMS, ("ifeval_prompt_loose", "ifeval_inst_loose", "response_ranking", "rr_avg",
                                  "frr_xstest_safe", "stop_rate"), f"{results['preset']}: untuned base in context")
    return _save(fig, path)


def refusal_rates(results: dict, path: Path) -> Path:
    fig, (ours, theirs) = plt.subplots(1, 2, figsize=(12, 4))
    for mode, per_n in results.get("safety", {}).items():
        counts = [int(n) for n in per_n]
        for key, style in (("rr_avg", "-o"), ("frr_xstest_safe", ":x")):
            entries = [per_n[str(n)].get(key) or {} for n in counts]
            values = [e.get("value") for e in entries]
            if None in values:
                continue
            low = [v - (e["ci"][0] if e["ci"][0] is not None else v) for v, e in zip(values, entries)]
            high = [(e["ci"][1] if e["ci"][1] is not None else v) - v for v, e in zip(values, entries)]
            ours.errorbar(counts, values, yerr=[low, high], fmt=style, capsize=3,
                          label=f"{mode.upper()} {'avg RR' if key == 'rr_avg' else 'XSTest FRR'}")
    ours.set(title=f"{results['preset']} (model-free classifier)", xlabel="refusal examples N", ylabel="rate",
             ylim=(0, 1))
    ours.legend(fontsize=8)
    for model, modes in TABLE_15_LIMA.items():
        for mode, figures in modes.items():
            theirs.plot(PAPER_COUNTS, figures["rr_avg"], "-o" if mode == "rt" else "--o", label=f"{model} {mode.upper()}")
    theirs.set(title="Paper, LIMA (avg RR, LLM judge)", xlabel="refusal examples N", ylim=(0, 1))
    theirs.legend(fontsize=8)
    fig.text(0.5, 0.01, SOURCE, ha="center", fontsize=7)
    return _save(fig, path)


def training_curves(results: dict, path: Path) -> Path:
    fig, (train, val) = plt.subplots(1, 2, figsize=(12, 4))
    for arm, entry in results["arms"].items():
        curve = entry.get("curve")
        if not curve:
            continue
        if curve["train_step"]:
            steps, losses = zip(*curve["train_step"])
            train.plot(steps, losses, label=arm, linewidth=1)
        if curve["val_epoch"]:
            epochs, losses = zip(*curve["val_epoch"])
            val.plot(epochs, losses, "-o", label=arm)
    train.set(title="train loss per step", xlabel="step")
    val.set(title="val loss per epoch", xlabel="epoch")
    for ax in (train, val):
        ax.legend(fontsize=7)
    return _save(fig, path)


def all_figures(results: dict, folder: Path) -> list[Path]:
    folder = Path(folder)
    return [helpfulness(results, folder / "helpfulness.png"), refusal_rates(results, folder / "refusal_vs_n.png"),
            in_context(results, folder / "in_context.png"), training_curves(results, folder / "training_curves.png")]


def _save(fig, path: Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

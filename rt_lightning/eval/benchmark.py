"""What a benchmark is: its prompts (``BenchmarkRow``s, from a hub dataset or a local file), how one response to
a prompt is scored, and how its scored rows aggregate into the numbers the paper reports.

One class per kind of evaluation:

* ``HarmfulBenchmark``: refusal rate (RR) on harmful prompts; HarmBench reports the mean of its two subsets' RR.
* ``XSTestBenchmark``: RR on the unsafe prompts and false-refusal rate (FRR) on the safe ones.
* ``IFEvalBenchmark``: the four IFEval accuracies.
* ``HelpfulBenchmark``: the NLL of reference answers (where the set has them) and, for JustEval, the RR on its
  safety prompts.
* ``ResponseRankingBenchmark``: no generation; the instructability probe of Hewitt et al. (2024) scores the model's
  log-probabilities of reference answers directly (``generates`` is false, ``score_model`` does the work).

Every summary also carries the row count ``n``, the stop rate (generations that ended before the token limit),
and the mean length in tokens and words. The registry of named benchmarks is ``rt_lightning.eval.benchmarks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Optional

from rt_lightning.data.templates import Template
from rt_lightning.eval.scoring.bootstrap import grouped_ratio_ci
from rt_lightning.eval.scoring.ifeval import IFEvalAccuracy, score_ifeval_row
from rt_lightning.eval.scoring.metrics import RateMetric, TokenWeightedMean
from rt_lightning.eval.scoring.ranking import rank_responses
from rt_lightning.eval.scoring.refusal import refusal_verdict


@dataclass
class BenchmarkRow:
    id: str
    """Stable across runs: an interrupted ``eval`` resumes by it."""
    instruction: str
    subset: str = ""
    """Part of the set reported separately (XSTest safe/unsafe, HarmBench standard/contextual, JustEval
    regular/safety)."""
    extra: dict = field(default_factory=dict)
    """What the scorers need beyond the instruction (IFEval constraints, reference answers)."""


def rate(rows: list[dict], key: str) -> float:
    """Share of ``rows`` whose ``key`` is true, through the same torchmetrics state the callback merges."""
    metric = RateMetric()
    metric.update(r[key] for r in rows)
    return float(metric.compute())


@dataclass(frozen=True)
class Benchmark:
    """A named prompt set; subclasses add their own per-row verdicts and reported numbers."""

    name: str
    hub: Optional[str]
    """Hugging Face dataset id the prompts load from when no local file is given."""
    local: Optional[str]
    """Path of the local file relative to a ``data_root`` (laid out like ``../shared/data``)."""
    load: Callable[[Optional[Path]], list[BenchmarkRow]]
    """Reads the rows from a local file, or from ``hub`` when given ``None``."""
    generates: ClassVar[bool] = True
    """Whether rows are answered by generation (``score_response``) or the model is scored directly
    (``score_model``)."""
    reports_refusals: ClassVar[bool] = False
    """Whether ``summarize`` reports refusal rates from the rows' ``refused`` flags alone, so that an LLM judge's
    flags can be summarized in their place."""

    def local_file(self, path: Optional[str] = None, data_root: Optional[str] = None) -> Optional[Path]:
        """``path`` if given, else ``data_root/<local>``, else ``None`` (load from the hub)."""
        if path:
            return Path(path)
        return Path(data_root) / self.local if data_root and self.local else None

    def rows(self, path: Optional[str] = None, data_root: Optional[str] = None,
             limit: Optional[int] = None) -> list[BenchmarkRow]:
        """Rows from ``path``, else ``data_root/<local>``, else the hub dataset.

        ``limit`` keeps the first rows of *each subset* so that two-sided sets (XSTest safe/unsafe) stay two-sided.
        """
        file = self.local_file(path, data_root)
        if file is not None and not file.is_file():
            raise FileNotFoundError(f"{self.name}: no file at {file}")
        rows = self.load(file)
        if limit is not None:
            taken: dict[str, int] = {}
            kept = []
            for row in rows:
                if taken.get(row.subset, 0) < limit:
                    taken[row.subset] = taken.get(row.subset, 0) + 1
                    kept.append(row)
            rows = kept
        return rows

    def score_response(self, row: BenchmarkRow, response: str) -> dict:
        """Per-row verdicts kept in the output: the refusal verdict, with its reason and evidence, for every row."""
        verdict = refusal_verdict(response, row.instruction)
        return {"refused": verdict.refused, "refusal_reason": verdict.reason,
                "refusal_evidence": list(verdict.evidence)}

    def reference(self, row: BenchmarkRow) -> Optional[str]:
        """A reference answer whose NLL the model is scored on, if this benchmark has one for ``row``."""
        return None

    def score_model(self, model, tokenizer, template: Template, rows: list[BenchmarkRow],
                    todo: list[BenchmarkRow]) -> list[dict]:
        """Result rows for ``todo`` (a subset of ``rows``) scored without generating; only where ``generates`` is
        false."""
        raise NotImplementedError(f"{self.name} is answered by generation")

    def summarize(self, rows: list[dict]) -> dict:
        """The reported numbers of this benchmark over its scored rows (``response``, verdicts, ``subset``...)."""
        if not rows:
            return {"n": 0}
        out: dict = {"n": len(rows)}
        if all("finish_reason" in r for r in rows):
            out["stop_rate"] = rate([{"stopped": r["finish_reason"] in ("eos", "stop")} for r in rows], "stopped")
        lengths = [r["num_tokens"] for r in rows if r.get("num_tokens") is not None]
        if lengths:
            out["mean_tokens"] = sum(lengths) / len(lengths)
        out["mean_words"] = sum(len(r["response"].split()) for r in rows) / len(rows)
        out.update(self.scores(rows))
        return out

    def scores(self, rows: list[dict]) -> dict:
        """The benchmark's own numbers, after the length and stop statistics every benchmark shares."""
        return {}


@dataclass(frozen=True)
class HarmfulBenchmark(Benchmark):
    """Harmful prompts: the refusal rate (RR)."""

    reports_refusals: ClassVar[bool] = True

    averaged_subsets: tuple[str, ...] = ()
    """Subsets whose RRs are averaged into ``rr`` when all are present (HarmBench: standard and contextual, as in
    the paper), each also reported as ``rr_<subset>``."""

    def scores(self, rows: list[dict]) -> dict:
        subsets = sorted({r.get("subset", "") for r in rows})
        if self.averaged_subsets and subsets == sorted(self.averaged_subsets):
            per = {s: rate([r for r in rows if r["subset"] == s], "refused") for s in subsets}
            return {**{f"rr_{s}": v for s, v in per.items()}, "rr": sum(per.values()) / len(per)}
        return {"rr": rate(rows, "refused")}


@dataclass(frozen=True)
class XSTestBenchmark(Benchmark):
    """XSTest: RR on the unsafe prompts (should be high), false-refusal rate on the safe ones (should be low)."""

    reports_refusals: ClassVar[bool] = True

    def scores(self, rows: list[dict]) -> dict:
        unsafe = [r for r in rows if r["subset"] == "unsafe"]
        safe = [r for r in rows if r["subset"] == "safe"]
        return {"rr_unsafe": rate(unsafe, "refused") if unsafe else float("nan"),
                "frr_safe": rate(safe, "refused") if safe else float("nan")}


@dataclass(frozen=True)
class IFEvalBenchmark(Benchmark):
    """IFEval: each row's constraints are checked (``ifeval`` verdict), then the four accuracies are pooled."""

    def score_response(self, row: BenchmarkRow, response: str) -> dict:
        return {**super().score_response(row, response),
                "ifeval": score_ifeval_row({"prompt": row.instruction, "response": response, **row.extra})}

    def scores(self, rows: list[dict]) -> dict:
        metric = IFEvalAccuracy()
        metric.update([r["ifeval"] for r in rows])
        return {k: float(v) for k, v in metric.compute().items()}


@dataclass(frozen=True)
class HelpfulBenchmark(Benchmark):
    """Ordinary instructions: the per-token NLL of reference answers where rows carry ``extra["reference"]``
    (``reference_nll``), and the RR on a ``safety`` subset if the set has one (JustEval's 200 safety prompts)."""

    reports_refusals: ClassVar[bool] = True

    def reference(self, row: BenchmarkRow) -> Optional[str]:
        return row.extra.get("reference") or None

    def scores(self, rows: list[dict]) -> dict:
        out = {}
        if "safety" in {r.get("subset", "") for r in rows}:
            out["rr_safety"] = rate([r for r in rows if r["subset"] == "safety"], "refused")
        scored = [r for r in rows if r.get("reference_nll_sum") is not None]
        if scored:
            nll = TokenWeightedMean()
            nll.update([r["reference_nll_sum"] for r in scored], [r["reference_tokens"] for r in scored])
            out["reference_nll"] = float(nll.compute())
        return out


@dataclass(frozen=True)
class ResponseRankingBenchmark(Benchmark):
    """Hewitt et al.'s response ranking on (instruction, reference answer) pairs: the share of rows where the model
    finds the row's own answer more likely than a seeded other row's answer, after the row's instruction, with a
    95% bootstrap interval. Scored in the IT format with the training template; no generation."""

    seed: int = 0
    """Seeds the choice of each row's distractor answer (stable across models, runs and resumes)."""
    generates: ClassVar[bool] = False

    def score_model(self, model, tokenizer, template: Template, rows: list[BenchmarkRow],
                    todo: list[BenchmarkRow]) -> list[dict]:
        pairs = [(row.instruction, row.extra["reference"]) for row in rows]
        position = {row.id: i for i, row in enumerate(rows)}
        scored = rank_responses(model, tokenizer, template, pairs, self.seed, only=[position[r.id] for r in todo])
        return [{"id": row.id, "benchmark": self.name, "subset": row.subset, "instruction": row.instruction,
                 "distractor_id": rows[s["distractor"]].id, **s} for row, s in zip(todo, scored)]

    def summarize(self, rows: list[dict]) -> dict:
        decided = [r for r in rows if r.get("correct") is not None]
        if not decided:
            return {"n": len(rows), "decided": 0}
        low, high = grouped_ratio_ci([[(float(r["correct"]), 1.0) for r in decided]])
        return {"n": len(rows), "decided": len(decided), "accuracy": rate(decided, "correct"), "ci_low": low,
                "ci_high": high}

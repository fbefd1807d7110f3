"""The registry of the paper's benchmarks (``BENCHMARKS``) and their loaders, each reading its hub dataset by
default or a local file.

Every loader returns ``BenchmarkRow``s with a stable ``id`` (used to resume an interrupted ``eval``), the
``instruction`` to prompt with, a ``subset`` (XSTest safe/unsafe, HarmBench standard/contextual, JustEval
regular/safety) and ``extra`` fields the scorers need (IFEval constraints, reference answers).
``data_root`` points at a folder laid out like ``../shared/data`` so every benchmark is found locally.

Adding a benchmark: write its loader here and register it in ``BENCHMARKS`` with the class that scores and
summarizes it (``rt_lightning.eval.benchmark``), plus a test of its summary.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

from rt_lightning.eval.benchmark import (
    Benchmark,
    BenchmarkRow,
    HarmfulBenchmark,
    HelpfulBenchmark,
    IFEvalBenchmark,
    ResponseRankingBenchmark,
    XSTestBenchmark,
)

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkRow", "load_benchmark"]


def _csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _hub(name: str, split: str = "train", config: Optional[str] = None) -> list[dict]:
    import datasets  # deferred: importing HF datasets is slow, and only hub loads need it

    return list(datasets.load_dataset(name, config, split=split))


def load_advbench(path):
    rows = _csv(path) if path else _hub("walledai/AdvBench")
    return [BenchmarkRow(f"advbench-{i}", (r.get("goal") or r.get("prompt")).strip().strip('"'))
            for i, r in enumerate(rows)]


def _harmbench_row(i: int, behavior: str, context: str, category: str) -> BenchmarkRow:
    # Contextual behaviours are posed after their context, separated as in the paper's code.
    text = f"{context}\n\n---\n\n{behavior}" if context else behavior
    return BenchmarkRow(f"harmbench-{category}-{i}", text, subset=category)


def load_harmbench(path):
    if path:
        rows = [r for r in _csv(path) if r["FunctionalCategory"] in ("standard", "contextual")]
        return [_harmbench_row(i, r["Behavior"], r["ContextString"], r["FunctionalCategory"])
                for i, r in enumerate(rows)]
    out = []
    for category in ("standard", "contextual"):
        for i, r in enumerate(_hub("walledai/HarmBench", config=category)):
            out.append(_harmbench_row(i, r["prompt"], r.get("context") or "", category))
    return out


def load_malicious_instruct(path):
    if path:
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        lines = [r["prompt"] for r in _hub("walledai/MaliciousInstruct")]
    return [BenchmarkRow(f"malicious-{i}", line.strip()) for i, line in enumerate(x for x in lines if x.strip())]


def load_xstest(path):
    rows = _csv(path) if path else _hub("walledai/XSTest", split="test")
    return [BenchmarkRow(f"xstest-{r.get('id', i)}", r["prompt"], subset=r["label"], extra={"type": r.get("type", "")})
            for i, r in enumerate(rows)]


def load_ifeval(path):
    if path:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        rows = _hub("google/IFEval")
    return [BenchmarkRow(f"ifeval-{r['key']}", r["prompt"],
                         extra={"instruction_id_list": list(r["instruction_id_list"]), "kwargs": list(r["kwargs"])})
            for r in rows]


def load_alpaca_eval(path):
    rows = json.loads(path.read_text(encoding="utf-8")) if path else _hub("tatsu-lab/alpaca_eval", "eval",
                                                                          "alpaca_eval")
    return [BenchmarkRow(f"alpaca_eval-{i}", r["instruction"],
                         extra={"reference": r["output"], "dataset": r.get("dataset", "")})
            for i, r in enumerate(rows)]


def load_just_eval(path):
    rows = json.loads(path.read_text(encoding="utf-8")) if path else _hub("re-align/just-eval-instruct", "test")
    rows = sorted(rows, key=lambda r: int(r["id"]))  # the paper evaluates the set sorted by id
    return [BenchmarkRow(f"just_eval-{r['id']}", r["instruction"], subset=r.get("category", ""),
                         extra={"reference": r.get("output", ""), "dataset": r.get("dataset", "")}) for r in rows]


def load_mt_bench(path):
    if path:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        rows = _hub("HuggingFaceH4/mt_bench_prompts")
    turns = [(r["question_id"], r.get("turns") or r.get("prompt"), r.get("category", "")) for r in rows]
    return [BenchmarkRow(f"mt_bench-{qid}", t[0], extra={"category": category}) for qid, t, category in turns]


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    HarmfulBenchmark("advbench", "walledai/AdvBench", "advbench/harmful_behaviors.csv", load_advbench),
    HarmfulBenchmark("harmbench", "walledai/HarmBench", "harmbench/harmbench_behaviors_text_all.csv", load_harmbench,
                     averaged_subsets=("standard", "contextual")),
    HarmfulBenchmark("malicious_instruct", "walledai/MaliciousInstruct", "malicious-instruct/MaliciousInstruct.txt",
                     load_malicious_instruct),
    XSTestBenchmark("xstest", "walledai/XSTest", "xstest/xstest_prompts.csv", load_xstest),
    IFEvalBenchmark("ifeval", "google/IFEval", "ifeval/input_data.jsonl", load_ifeval),
    HelpfulBenchmark("alpaca_eval", "tatsu-lab/alpaca_eval",
                     "alpaca-eval/reference_outputs/text_davinci_003_model_outputs.json", load_alpaca_eval),
    HelpfulBenchmark("just_eval", "re-align/just-eval-instruct",
                     "just-eval/just_eval_instruct_gpt-4-0613_outputs.json", load_just_eval),
    HelpfulBenchmark("mt_bench", "HuggingFaceH4/mt_bench_prompts", "mt-bench/question.jsonl", load_mt_bench),
    # Held-out (instruction, response) pairs for the instructability probe: AlpacaEval's reference answers.
    ResponseRankingBenchmark("response_ranking", "tatsu-lab/alpaca_eval",
                             "alpaca-eval/reference_outputs/text_davinci_003_model_outputs.json", load_alpaca_eval),
]}
"""Every benchmark ``eval`` and the ``GenerationValidation`` callback know, by name."""


def load_benchmark(name: str, path: Optional[str] = None, data_root: Optional[str] = None,
                   limit: Optional[int] = None) -> list[BenchmarkRow]:
    """Rows of ``name`` from ``path``, else ``data_root/<its local file>``, else its hub dataset.

    ``limit`` keeps the first rows of *each subset* so that two-sided sets (XSTest safe/unsafe) stay two-sided.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[name].rows(path, data_root, limit)

"""LLM-judge the rows that ``eval`` wrote, resumably (the library side of ``python -m rt_lightning judge``).

Per input file it writes ``<output_dir>/<stem>.<task>.jsonl`` (one judged row per eval row, flushed as written)
and updates ``<output_dir>/judge_metrics.json``. Kill it and run it again: judged rows are skipped, replies already
received come from the cache, and rows whose requests failed are dropped from the file and retried.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal, Optional

from rt_lightning.eval.judge.client import JudgeClient
from rt_lightning.eval.judge.judges import Judge, MultiAspectJudge, PairwiseJudge, RefusalJudge
from rt_lightning.eval.results import ResultsFile

log = logging.getLogger(__name__)

__all__ = ["run_judge", "read_eval_rows", "pair_rows"]


def read_eval_rows(path: str | Path, limit: Optional[int] = None) -> list[dict]:
    """Rows of an ``eval`` output file (``id``, ``instruction``, ``response``, ...). A torn last line, from an
    ``eval`` still running or killed, is skipped."""
    rows, lines = [], Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                log.warning("%s: skipping a torn last line", path)
                break
            raise ValueError(f"{path}, line {number}: not JSON") from None
        if "response" not in row:
            raise ValueError(f"{path}, line {number}: missing field 'response'")
        row["id"] = str(row.get("id", f"line-{number}"))
        row.setdefault("instruction", row.get("prompt", ""))  # eval's "prompt" is the templated text: last resort
        rows.append(row)
    return rows[:limit] if limit is not None else rows


def pair_rows(rows_a: list[dict], rows_b: list[dict]) -> tuple[list[dict], int]:
    """Pairwise items for ids present in both files (in A's order), and how many rows had no partner."""
    by_id = {r["id"]: r for r in rows_b}
    items = []
    for a in rows_a:
        b = by_id.get(a["id"])
        if b is None:
            continue
        if a["instruction"].strip() != b["instruction"].strip():
            raise ValueError(f"id {a['id']!r} has different instructions in the two files: not the same benchmark?")
        items.append({"id": a["id"], "benchmark": a.get("benchmark"), "subset": a.get("subset"),
                      "instruction": a["instruction"], "response_a": a["response"], "response_b": b["response"]})
    return items, len(rows_a) + len(rows_b) - 2 * len(items)


def _open_judgments(path: Path, fingerprint: str) -> ResultsFile:
    """The judged-rows file, minus rows that failed (so they are retried). Rows judged with another setup (judge
    model, prompt, token budget) are refused: mixing them would make one metric from two judges."""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # torn last row; ResultsFile would drop it too
            if row.get("judge_setup") != fingerprint:
                raise ValueError(f"{path} holds judgments from another setup ({row.get('judge_setup')} vs "
                                 f"{fingerprint}: judge model, template or max_tokens changed); use another "
                                 f"output_dir or delete the file")
            if row.get("status") != "failed":
                kept.append(line)
        if len(kept) < len(lines):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)  # atomic: a kill here leaves either the old or the new file
            log.info("%s: %d failed or torn rows dropped for retry", path, len(lines) - len(kept))
    return ResultsFile(path)


def _judge_file(judge: Judge, items: list[dict], path: Path, batch_size: int) -> list[dict]:
    with _open_judgments(path, judge.fingerprint) as results:
        todo = [item for item in items if item["id"] not in results]
        log.info("%s: %d of %d rows to judge", path.name, len(todo), len(items))
        for start in range(0, len(todo), batch_size):
            for row in judge.judge(todo[start:start + batch_size]):
                results.append(row)
            log.info("%s: %d/%d judged", path.name, min(start + batch_size, len(todo)), len(todo))
        return [results.rows[item["id"]] for item in items if item["id"] in results.rows]


def run_judge(
    task: Literal["refusal", "pairwise", "aspects"],
    inputs: list[str],
    output_dir: str,
    base_url: str = "http://localhost:8000/v1",
    model: str = "meta-llama/Llama-3.1-70B-Instruct",
    api_key_env: str = "OPENAI_API_KEY",
    template: Optional[str] = None,
    safety_template: Optional[str] = None,
    safety_subset: str = "safety",
    max_concurrency: int = 8,
    timeout: float = 300.0,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    max_tokens: int = 2048,
    cache_dir: Optional[str] = None,
    limit: Optional[int] = None,
    batch_size: int = 64,
) -> dict:
    """Judge eval output files with an LLM served behind an OpenAI-compatible API (e.g. ``vllm serve``), resumably.

    Args:
        task: ``refusal`` (refusal/compliance per row: RR, FRR, agreement with the offline classifier),
            ``pairwise`` (two files: model A vs model B, both orders; win rate of A with a 95% CI) or ``aspects``
            (JustEval 1-5 scores; rows of ``safety_subset`` get the safety score).
        inputs: ``eval`` output JSONL files. Pairwise: exactly two, A (e.g. RT) then B (e.g. IT), matched by id.
        output_dir: Folder for ``<stem>.<task>.jsonl`` and ``judge_metrics.json``; rerunning continues there.
        base_url: The server's API root, e.g. ``http://localhost:8000/v1``.
        model: Judge model name as served (the paper: Llama-3.1-70B-Instruct).
        api_key_env: Name of the environment variable holding the API key (the key itself never goes in a file).
        template: Judge prompt file; default: ours in ``rt_lightning/assets/judge_prompts``. The paper's refusal
            prompt, JustEval's and AlpacaEval's files are accepted by path (see ``judge_templates.PLACEHOLDERS``).
        safety_template: ``aspects`` only: the prompt for the safety subset.
        safety_subset: ``aspects`` only: rows with this ``subset`` are scored on safety alone.
        max_concurrency: Requests in flight at once.
        timeout: Seconds allowed per connect / socket read.
        max_retries: Retries per request on 429, 5xx, timeouts and dropped connections.
        backoff_base: First retry wait in seconds (doubling, with jitter).
        max_tokens: Judge output budget.
        cache_dir: Reply cache folder; default ``<output_dir>/judge_cache``.
        limit: Judge only the first N rows of each input (pairwise: the first N matched prompts).
        batch_size: Rows per batch; each batch is written before the next is sent.
    """
    if task == "pairwise" and len(inputs) != 2:
        raise ValueError("pairwise needs exactly two inputs: model A's eval file, then model B's")
    stems = [Path(p).stem for p in inputs]
    if task != "pairwise" and len(set(stems)) != len(stems):
        raise ValueError(f"inputs share a file name {stems}; judge them into separate output_dirs")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    client = JudgeClient(base_url, model, api_key_env, max_concurrency, timeout, max_retries, backoff_base,
                         max_tokens=max_tokens, cache_dir=cache_dir or out / "judge_cache")
    if task == "refusal":
        judge: Judge = RefusalJudge(client, template)
    elif task == "pairwise":
        judge = PairwiseJudge(client, template)
    elif task == "aspects":
        judge = MultiAspectJudge(client, template, safety_template, safety_subset)
    else:
        raise ValueError(f"unknown task {task!r}; choose refusal, pairwise or aspects")

    jobs: list[tuple[str, list[dict], dict]] = []
    if task == "pairwise":
        # Limit after pairing: the two files need not list the prompts in the same order.
        items, unmatched = pair_rows(read_eval_rows(inputs[0]), read_eval_rows(inputs[1]))
        jobs.append((f"{stems[0]}.pairwise", items[:limit] if limit is not None else items,
                     {"inputs": list(inputs), "unmatched": unmatched}))
    else:
        jobs += [(f"{stem}.{task}", read_eval_rows(path, limit), {"inputs": [path]})
                 for stem, path in zip(stems, inputs)]

    metrics_path = out / "judge_metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    try:
        for key, items, extra in jobs:
            before = client.counters()
            judged = _judge_file(judge, items, out / f"{key}.jsonl", batch_size)
            after = client.counters()
            metrics[key] = {**judge.metrics(judged), **extra, "setup": judge.setup,
                            "templates": {k: t.path for k, t in judge.templates.items()},
                            "client": {k: after[k] - before[k] for k in ("requests", "cache_hits", "retries",
                                                                         "failures")}}
            tmp = metrics_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(metrics, indent=2))
            os.replace(tmp, metrics_path)
            log.info("%s: %s", key, {k: v for k, v in metrics[key].items() if not isinstance(v, (dict, list))})
    finally:
        client.close()
    return metrics

"""LLM-judge the rows that ``eval`` wrote, resumably (the library side of ``python -m rt_lightning judge``).

Per input file it writes ``<output_dir>/<stem>.<judge name>.jsonl`` (one judged row per eval row, flushed as
written) and updates ``<output_dir>/judge_metrics.json``. Kill it and run it again: judged rows are skipped, replies
already received come from the cache, and rows whose requests failed are dropped from the file and retried.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Union

from rt_lightning.eval.judge.client import JudgeClient, JudgeClientConfig
from rt_lightning.eval.judge.judges import Judge, JudgeName
from rt_lightning.eval.results import ResultsFile
from rt_lightning.io import FolderLock, atomic_write_json, atomic_write_text, iter_jsonl

log = logging.getLogger(__name__)

__all__ = ["run_judge", "read_eval_rows", "pair_rows"]


def read_eval_rows(path: str | Path, limit: Optional[int] = None) -> list[dict]:
    """Rows of an ``eval`` output file (``id``, ``instruction``, ``response``, ...). A torn last line, from an
    ``eval`` still running or killed, is skipped; an unreadable line before it stops the read, naming the line."""
    rows = []
    for number, row in iter_jsonl(path):
        if not isinstance(row, dict) or "response" not in row:
            raise ValueError(f"{path}, line {number}: not an eval row (no field 'response')")
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
        rows = list(iter_jsonl(path, repair=True))  # a torn last row is cut off, as ResultsFile would
        for number, row in rows:
            setup = row.get("judge_setup") if isinstance(row, dict) else None
            if setup != fingerprint:
                raise ValueError(f"{path}, line {number}: judged with another setup ({setup} vs {fingerprint}: judge "
                                 f"model, template or max_tokens changed); use another output_dir or delete the file")
        kept = [row for _, row in rows if row.get("status") != "failed"]
        if len(kept) < len(rows):
            # Same serialization as JsonlAppender; atomic, so a kill here leaves either the old or the new file.
            atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept))
            log.info("%s: %d failed rows dropped for retry", path, len(rows) - len(kept))
    return ResultsFile(path)


def _judge_file(judge: Judge, client: JudgeClient, items: list[dict], path: Path, batch_size: int) -> list[dict]:
    with _open_judgments(path, judge.fingerprint(client)) as results:
        todo = [item for item in items if item["id"] not in results]
        log.info("%s: %d of %d rows to judge", path.name, len(todo), len(items))
        for start in range(0, len(todo), batch_size):
            for row in judge.judge(todo[start:start + batch_size], client):
                results.append(row)
            log.info("%s: %d/%d judged", path.name, min(start + batch_size, len(todo)), len(todo))
        return [results.rows[item["id"]] for item in items if item["id"] in results.rows]


def run_judge(
    judge: Union[JudgeName, Judge],
    inputs: list[str],
    output_dir: str,
    client: JudgeClientConfig = JudgeClientConfig(),
    cache_dir: Optional[str] = None,
    limit: Optional[int] = None,
    batch_size: int = 64,
) -> dict:
    """Judge eval output files with an LLM served behind an OpenAI-compatible API (e.g. ``vllm serve``), resumably.

    Args:
        judge: ``refusal`` (refusal/compliance per row: RR, FRR, agreement with the offline classifier),
            ``pairwise`` (two files: model A vs model B, both orders; win rate of A with a 95% CI) or ``aspects``
            (JustEval 1-5 scores), with our prompts; or a ``Judge`` class (``RefusalJudge``, ``PairwiseJudge``,
            ``MultiAspectJudge`` or a class path of your own) with its init args, e.g. another prompt file:
            ``--judge RefusalJudge --judge.template paper_prompt.txt`` (``--judge.help RefusalJudge`` lists them).
        inputs: ``eval`` output JSONL files. Pairwise: exactly two, A (e.g. RT) then B (e.g. IT), matched by id.
        output_dir: Folder for ``<stem>.<judge>.jsonl`` and ``judge_metrics.json``; rerunning continues there.
        client: The judge server, model, concurrency, timeouts and retries.
        cache_dir: Reply cache folder; default ``<output_dir>/judge_cache``.
        limit: Judge only the first N rows of each input (pairwise: the first N matched prompts).
        batch_size: Rows per batch; each batch is written before the next is sent.
    """
    if isinstance(judge, str):
        judge = Judge.from_name(judge)
    if judge.paired and len(inputs) != 2:
        raise ValueError(f"the {judge.name} judge needs exactly two inputs: model A's eval file, then model B's")
    stems = [Path(p).stem for p in inputs]
    if not judge.paired and len(set(stems)) != len(stems):
        raise ValueError(f"inputs share a file name {stems}; judge them into separate output_dirs")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    jobs: list[tuple[str, list[dict], dict]] = []
    if judge.paired:
        # Limit after pairing: the two files need not list the prompts in the same order.
        items, unmatched = pair_rows(read_eval_rows(inputs[0]), read_eval_rows(inputs[1]))
        jobs.append((f"{stems[0]}.{judge.name}", items[:limit] if limit is not None else items,
                     {"inputs": list(inputs), "unmatched": unmatched}))
    else:
        jobs += [(f"{stem}.{judge.name}", read_eval_rows(path, limit), {"inputs": [path]})
                 for stem, path in zip(stems, inputs)]

    metrics_path = out / "judge_metrics.json"
    lock = FolderLock(out, "judge").acquire()  # two writers of one folder would judge (and pay for) every row twice
    metrics = _read_metrics(metrics_path)
    judge_client = JudgeClient(client, cache_dir=cache_dir or out / "judge_cache")
    try:
        for key, items, extra in jobs:
            before = judge_client.counters()
            judged = _judge_file(judge, judge_client, items, out / f"{key}.jsonl", batch_size)
            after = judge_client.counters()
            metrics[key] = {**judge.metrics(judged), **extra, "setup": judge.setup(judge_client),
                            "templates": {k: t.path for k, t in judge.templates.items()},
                            "client": {k: after[k] - before[k] for k in ("requests", "cache_hits", "retries",
                                                                         "failures")}}
            atomic_write_json(metrics_path, metrics)
            log.info("%s: %s", key, {k: v for k, v in metrics[key].items() if not isinstance(v, (dict, list))})
    finally:
        judge_client.close()
        lock.release()
    return metrics


def _read_metrics(path: Path) -> dict:
    """Earlier judge_metrics.json; an unreadable one is set aside (each job's numbers are recomputed from its rows)."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is unreadable (interrupted write?); recomputing the metrics of the inputs judged now", path)
        return {}

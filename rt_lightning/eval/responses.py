"""A file of responses generated elsewhere (vLLM, an API) for ``eval --responses``, validated as a whole before
anything is scored or written.

Each line is a JSON object ``{"response": str, "id": ..., "prompt": ...}`` with an ``id`` of the benchmark's rows
(``ifeval-1000``) or the ``prompt`` text of one (matched after stripping whitespace), or both (the ``id`` wins).
Every problem stops the run with the file and line named: an unreadable line (a torn last line too: this file is
an input, not a file we append to), a ``response`` that is missing or not a string, a line that matches no row or
a row that two rows share, and a row answered twice (a repeated id or prompt).
"""

from __future__ import annotations

from pathlib import Path

from rt_lightning.eval.benchmark import Benchmark, BenchmarkRow
from rt_lightning.io import CorruptLineError, iter_jsonl


class ResponsesFileError(ValueError):
    """A line of a ``--responses`` file that cannot be scored; the message names the file and line."""


def _last_content_line(path: Path) -> int:
    lines = path.read_bytes().splitlines()
    return max((number for number, line in enumerate(lines, start=1) if line.strip()), default=0)


def _read_lines(path: Path) -> list[tuple[int, object]]:
    try:
        lines = list(iter_jsonl(path))
    except CorruptLineError as err:
        raise ResponsesFileError(str(err)) from None
    last = _last_content_line(path)
    if last and (not lines or lines[-1][0] != last):  # iter_jsonl forgives a torn tail; an input file must be whole
        raise ResponsesFileError(f"{path}, line {last}: not valid JSON; fix or delete this line")
    return lines


def read_responses(path: str | Path, benchmark: Benchmark, rows: list[BenchmarkRow]) -> dict[str, str]:
    """Map row id -> response for the rows of ``benchmark`` that ``path`` answers (it may answer only some).

    Raises ``ResponsesFileError`` at the first line that cannot be used, before the caller writes anything.
    """
    path = Path(path)
    by_id = {r.id: r for r in rows}
    by_prompt: dict[str, list[BenchmarkRow]] = {}
    for row in rows:
        by_prompt.setdefault(row.instruction.strip(), []).append(row)
    answered_on: dict[str, int] = {}
    matched: dict[str, str] = {}
    for number, item in _read_lines(path):
        where = f"{path}, line {number}"
        if not isinstance(item, dict):
            raise ResponsesFileError(f"{where}: expected a JSON object with 'response' and 'id' or 'prompt'")
        if "response" not in item:
            raise ResponsesFileError(f"{where}: missing field 'response'")
        if not isinstance(item["response"], str):
            raise ResponsesFileError(f"{where}: 'response' must be a string, not {type(item['response']).__name__}")
        row = by_id.get(str(item.get("id")))
        if row is None:
            prompt = item.get("prompt")
            if not isinstance(prompt, str):
                if item.get("id") is not None:
                    raise ResponsesFileError(f"{where}: id {item['id']!r} is not a row of {benchmark.name}, and there "
                                             "is no 'prompt' string to match one by")
                raise ResponsesFileError(f"{where}: needs an 'id' or a 'prompt' string to match a row of "
                                         f"{benchmark.name}")
            candidates = by_prompt.get(prompt.strip(), [])
            if not candidates:
                raise ResponsesFileError(f"{where}: prompt matches no row of {benchmark.name}")
            if len(candidates) > 1:
                raise ResponsesFileError(f"{where}: {len(candidates)} rows of {benchmark.name} have this prompt "
                                         f"({', '.join(r.id for r in candidates)}); give the row's 'id'")
            row = candidates[0]
        if row.id in answered_on:
            raise ResponsesFileError(f"{where}: answers row {row.id} again (a duplicate id or prompt; first on line "
                                     f"{answered_on[row.id]})")
        answered_on[row.id] = number
        matched[row.id] = item["response"]
    return matched

"""Sources → ``Record(instruction, response)``: file readers with row-exact errors and per-dataset normalisers.

Every source becomes a list of records, each remembering the file and row it came from, so that any later
problem (empty response, nothing left to train after truncation) can name the exact place to fix.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

log = logging.getLogger(__name__)

LIMA_TRAIN_SIZE = 1000
"""The paper (and its code) keeps the first 1,000 LIMA conversations, the single-turn part."""


class DataError(ValueError):
    """Bad input data; the message names the file (or dataset) and the row."""


@dataclass(frozen=True)
class Record:
    instruction: str
    response: str
    source: str = ""
    """File path or hub id the record came from."""
    row: int = -1
    """0-based row in ``source`` (for JSONL and CSV files: the data row, i.e. line number minus the header)."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def where(self) -> str:
        return f"{self.source}, row {self.row}"


RowOrError = "tuple[int, dict | DataError]"
"""What a reader yields: a row, or the ``DataError`` of a row that could not be read (``on_bad_row`` decides)."""


def _check_utf8(row: dict, where: str) -> dict | DataError:
    # Files are decoded with "surrogateescape" so one bad byte sequence cannot hide which row it sits in;
    # here any string still holding an escaped byte is reported with that row.
    for key, value in row.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                return DataError(f"{where}: field {key!r} is not valid UTF-8 (byte {err.object[err.start]!r})")
    return row


def _read_json_rows(path: Path) -> Iterator[RowOrError]:
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    if text.lstrip()[:1] == "[":  # one JSON array: if it does not parse, no row can be read (never skippable)
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
        for index, row in enumerate(rows):
            where = f"{path}, row {index}"
            yield index, _check_utf8(row, where) if isinstance(row, dict) else \
                DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        return
    index = 0  # JSON Lines: a bad line is a bad row, and still counts as a row so later rows keep their numbers
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}, row {index} (line {line_number})"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield index, DataError(f"{where}: invalid JSON: {err.msg}")
        else:
            yield index, _check_utf8(row, where) if isinstance(row, dict) else \
                DataError(f"{where}: expected a JSON object")
        index += 1


def _read_csv_rows(path: Path) -> Iterator[RowOrError]:
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    for index, row in enumerate(csv.DictReader(text.splitlines(keepends=True))):
        yield index, _check_utf8(row, f"{path}, row {index}")


def _read_parquet_rows(path: Path) -> Iterator[RowOrError]:
    import datasets  # deferred: a heavy import (pyarrow) that only these readers need

    yield from enumerate(datasets.Dataset.from_parquet(str(path)))


READERS: dict[str, Callable[[Path], Iterator[RowOrError]]] = {
    ".json": _read_json_rows, ".jsonl": _read_json_rows, ".csv": _read_csv_rows, ".parquet": _read_parquet_rows,
}


def read_rows_or_errors(source: str, split: str = "train") -> Iterator[RowOrError]:
    """Yield ``(row, dict)`` from a local json/jsonl/csv/parquet file, or from a hub dataset via ``load_dataset``;
    a row that cannot be read (bad JSON line, bad UTF-8, not an object) comes as ``(row, DataError)``."""
    path = Path(source).expanduser()
    if path.exists():
        reader = READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(READERS)}")
        yield from reader(path)
        return
    if source.startswith((".", "/", "~")) or Path(source).suffix.lower() in READERS:
        raise DataError(f"{source}: no such file")
    import datasets  # deferred: a heavy import (pyarrow) that only these readers need

    yield from enumerate(datasets.load_dataset(source, split=split))


def read_rows(source: str, split: str = "train") -> Iterator[tuple[int, dict]]:
    """``read_rows_or_errors`` that stops at the first row that cannot be read."""
    for index, row in read_rows_or_errors(source, split):
        if isinstance(row, DataError):
            raise row
        yield index, row


def _field(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise DataError(f"{where}: missing field {key!r} (fields present: {sorted(row)})")
    value = row[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def join_input(instruction: str, extra: str) -> str:
    """Alpaca/Dolly rule of the paper's code: ``instruction + "\\n\\n" + input`` when the input is non-empty."""
    return f"{instruction}\n\n{extra}" if extra else instruction


# A normaliser maps one raw row to (instruction, response), or to None to drop a row by design (e.g. multi-turn LIMA).
Normaliser = Callable[[dict, str], "tuple[str, str] | None"]


def alpaca(row: dict, where: str):
    if row.get("history"):  # LLaMA-Factory's Alpaca layout keeps earlier turns here: multi-turn, left out
        return None
    return join_input(_field(row, "instruction", where), _field(row, "input", where) if "input" in row else ""), \
        _field(row, "output", where)


def dolly(row: dict, where: str):
    return join_input(_field(row, "instruction", where), _field(row, "context", where) if "context" in row else ""), \
        _field(row, "response", where)


def lima(row: dict, where: str):
    if "conversations" in row:  # GAIR/lima on the hub
        turns = row["conversations"]
        return (turns[0], turns[1]) if len(turns) == 2 else None
    return alpaca(row, where)  # Alpaca-layout copy (e.g. LLaMA-Factory's lima.json)


def prompt_completion(row: dict, where: str):
    """The paper's own saved training files (``datasets/train/*.jsonl``)."""
    return _field(row, "prompt", where), _field(row, "completion", where)


NORMALISERS: dict[str, Normaliser] = {
    "alpaca": alpaca, "dolly": dolly, "lima": lima, "prompt_completion": prompt_completion,
    # Safety-Tuned LLaMAs refusals use the Alpaca layout (instruction, input, output).
    "refusals": alpaca,
}


class FieldLayout:
    """The layout of any file: name the fields holding the instruction, the response and an optional input.

    Select it with ``layout: {class_path: rt_lightning.data.FieldLayout, init_args: {instruction: q, response: a}}``.
    """

    def __init__(self, instruction: str = "instruction", response: str = "response", input: Optional[str] = None):
        """
        Args:
            instruction: The field holding the instruction.
            response: The field holding the response.
            input: An optional field appended to the instruction after a blank line (Alpaca's rule).
        """
        self.instruction, self.response, self.input = instruction, response, input

    def __call__(self, row: dict, where: str) -> tuple[str, str]:
        extra = _field(row, self.input, where) if self.input and self.input in row else ""
        return join_input(_field(row, self.instruction, where), extra), _field(row, self.response, where)

    def __repr__(self) -> str:
        return f"FieldLayout(instruction={self.instruction!r}, response={self.response!r}, input={self.input!r})"


def detect_layout(row: dict) -> str:
    keys = set(row)
    if "conversations" in keys:
        return "lima"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if {"instruction", "response"} <= keys:
        return "dolly"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    raise DataError(f"cannot tell the layout of rows with fields {sorted(keys)}; "
                    "set `layout` (a name or a FieldLayout)")


def load_records(source: str, layout: str | Normaliser = "auto", split: str = "train", on_bad_row: str = "error",
                 limit: int | None = None) -> list[Record]:
    """Read ``source`` and normalise every row into a ``Record``.

    Args:
        layout: a key of ``NORMALISERS``, ``"auto"`` (guess from the first row), or a normaliser (a function or a
            ``FieldLayout``).
        on_bad_row: ``"error"`` stops at the first bad row with its file and row; ``"skip"`` drops it, counts and logs
            (file, row and line). Bad rows: a JSON Lines line that is not JSON or not an object, a field that is not
            valid UTF-8, a missing or non-string field, an empty response. Never skippable: a ``.json`` array file
            that does not parse as a whole (no row can be read), a missing file, an unknown layout.
        limit: keep only the first ``limit`` records (``lima`` defaults to the paper's 1,000).
    """
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if isinstance(layout, str) and layout not in NORMALISERS and layout != "auto":
        raise ValueError(f"Unknown layout {layout!r}; choose one of {sorted(NORMALISERS) + ['auto']}")
    if layout == "lima" and limit is None:
        limit = LIMA_TRAIN_SIZE
    normalise = NORMALISERS.get(layout) if isinstance(layout, str) else layout
    records, skipped, dropped = [], 0, 0
    for row_index, row in read_rows_or_errors(source, split):
        if limit is not None and len(records) >= limit:
            break
        where = f"{source}, row {row_index}"
        if normalise is None and not isinstance(row, DataError):
            normalise = NORMALISERS[detect_layout(row)]  # outside the skip rule: a setting to fix, not a bad row
        try:
            if isinstance(row, DataError):  # a line that is not JSON, bytes that are not UTF-8, not an object
                raise row
            pair = normalise(row, where)
            if pair is None:
                dropped += 1
                continue
            instruction, response = pair
            if not response.strip():
                raise DataError(f"{where}: empty response (nothing to train on)")
        except DataError as err:
            if on_bad_row == "error":
                raise
            skipped += 1
            log.warning("Skipping bad row: %s", err)
            continue
        records.append(Record(instruction, response, source, row_index))
    if skipped:
        log.warning("%s: skipped %d bad row(s) (on_bad_row='skip')", source, skipped)
    if dropped:
        log.info("%s: left out %d row(s) by layout rule (e.g. multi-turn)", source, dropped)
    if not records:
        raise DataError(f"{source}: no usable rows")
    return records

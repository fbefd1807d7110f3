"""Append-only JSONL of scored generations that survives kills: every row is flushed when written, and reopening
drops a torn last line and reports which ids are done, so a rerun continues with no duplicate and no lost row."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def read_intact_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file up to its first torn or unreadable line, which is cut off (with a warning) so that
    appending afterwards starts on a clean line."""
    raw = path.read_bytes()
    rows, good_end = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn write from a kill: everything up to here is intact
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end += len(line)
    if good_end < len(raw):
        log.warning("%s: dropping %d bytes of an interrupted last row", path, len(raw) - good_end)
        with path.open("r+b") as fh:
            fh.truncate(good_end)
    return rows


class ResultsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            self._recover()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        for row in read_intact_jsonl(self.path):
            if row["id"] in self.rows:
                raise ValueError(f"{self.path}: duplicate id {row['id']!r}")
            self.rows[row["id"]] = row

    def __contains__(self, row_id: str) -> bool:
        return row_id in self.rows

    def append(self, row: dict) -> None:
        if row["id"] in self.rows:
            raise ValueError(f"{self.path}: id {row['id']!r} written twice")
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows[row["id"]] = row

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""Append-only JSONL of scored rows, keyed by ``id``, that survives kills: every row is fsynced as it is written,
and reopening drops a torn last line (``rt_lightning.io``) and reports which ids are done, so a rerun continues
with no duplicate and no lost row."""

from __future__ import annotations

from pathlib import Path

from rt_lightning.io import JsonlAppender, iter_jsonl


class ResultsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for number, row in iter_jsonl(self.path, repair=True):
                if not isinstance(row, dict) or "id" not in row:
                    raise ValueError(f"{self.path}, line {number}: not a result row (no 'id')")
                if row["id"] in self.rows:
                    raise ValueError(f"{self.path}, line {number}: duplicate id {row['id']!r}")
                self.rows[row["id"]] = row
        self._out = JsonlAppender(self.path)

    def __contains__(self, row_id: str) -> bool:
        return row_id in self.rows

    def append(self, row: dict) -> None:
        if row["id"] in self.rows:
            raise ValueError(f"{self.path}: id {row['id']!r} written twice")
        self._out.write(row)
        self.rows[row["id"]] = row

    def close(self) -> None:
        self._out.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""Files that survive kills: one JSONL reader with one torn-tail policy, an append-and-fsync writer, atomic writes.

Every result file of rt_lightning (eval rows, judged rows, the judge's reply cache, metrics, reports) goes through
this module, so they all behave alike when a run is killed mid-write:

* ``read_jsonl``: a torn *last* line (no newline at the end, or not JSON) is what a kill leaves behind; it is
  dropped with a warning (and, with ``repair=True``, cut off the file so appending starts on a clean line). A bad
  line anywhere else is never silently dropped: it stops the read with the file and line named.
* ``JsonlAppender``: one line per row, flushed and fsynced as it is written.
* ``atomic_write_text`` / ``atomic_write_json``: written to a temporary file in the same folder, fsynced, then
  renamed over the target, so a reader sees the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

log = logging.getLogger(__name__)


class CorruptLineError(ValueError):
    """A JSONL line that is not a JSON object, somewhere other than at the (torn) end of the file."""


def _parse(line: bytes) -> Any:
    return json.loads(line.decode("utf-8"))


def iter_jsonl(path: str | Path, repair: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of ``path``.

    Torn-tail policy: only the last line may be unreadable (a kill mid-write); it is skipped with a warning, and
    with ``repair=True`` truncated away. An unreadable line before the last raises ``CorruptLineError`` naming
    the file and line: deleting the rows after it would lose data, and guessing would hide a real problem.
    """
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    offset = 0
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if line.strip():
            try:
                value = _parse(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                if not last:
                    raise CorruptLineError(f"{path}, line {number}: not valid JSON ({err}); the rows after it are "
                                           "intact, so fix or delete this line by hand") from None
                log.warning("%s: skipping a torn last line (%d bytes), left by an interrupted write", path, len(line))
                if repair:
                    with path.open("r+b") as fh:
                        fh.truncate(offset)
                return
            if last and repair and not line.endswith(b"\n"):
                # A complete row without its newline: add it, so the next append starts on a line of its own.
                with path.open("ab") as fh:
                    fh.write(b"\n")
            yield number, value
        offset += len(line)


def read_jsonl(path: str | Path, repair: bool = False) -> list[Any]:
    """All values of ``path`` under the torn-tail policy of :func:`iter_jsonl`."""
    return [value for _, value in iter_jsonl(path, repair)]


class JsonlAppender:
    """Append JSON rows to a file, each flushed and fsynced before ``write`` returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, row: Any) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """A file to write ``path`` through: a temporary file in the same folder, fsynced and renamed over ``path`` when
    the block ends without an error, deleted when it does not. Readers never see a half-written ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that a kill leaves either the old file or the new one."""
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, value: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")


class FolderInUseError(RuntimeError):
    """Another live process writes to the same output folder."""


class FolderLock:
    """One writer per output folder: a ``.lock`` file holding the writer's pid, created atomically.

    Two ``eval`` runs on one folder would each write every row; the second is refused with the first one's pid
    instead. A lock left by a process that no longer runs (killed with ``kill -9``) is taken over with a warning.
    """

    def __init__(self, folder: str | Path, what: str = "rt_lightning"):
        self.path = Path(folder) / ".lock"
        self.what = what
        self._held = False

    def acquire(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise FolderInUseError(f"{self.path.parent} is being written by another {self.what} process "
                                           f"(pid {owner}); wait for it, or use another output folder") from None
                log.warning("%s: taking over a lock left by pid %s, which is no longer running", self.path, owner)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            self._held = True
            return self
        raise FolderInUseError(f"{self.path}: could not take the lock")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or "0") or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True

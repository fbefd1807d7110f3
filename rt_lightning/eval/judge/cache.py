"""On-disk cache of judge replies: append-only JSONL, one flushed line per reply, keyed by a sha256 of everything
that determines the reply (judge, model, messages, generation settings). Reruns then cost nothing, and a run killed
mid-batch resumes from the last reply written. Only successful replies are stored, so failures are retried.

The API key is never part of the key or of a line: it does not change the judgment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

from rt_lightning.io import JsonlAppender, read_jsonl

log = logging.getLogger(__name__)

__all__ = ["JudgeCache", "cache_key"]


def cache_key(judge: str, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    blob = json.dumps({"judge": judge, "model": model, "messages": messages, "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    FILE_NAME = "judge_cache.jsonl"

    def __init__(self, cache_dir: str | Path):
        self.path = Path(cache_dir) / self.FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._replies: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            self._recover()
        self._out = JsonlAppender(self.path)

    def _recover(self) -> None:
        for entry in read_jsonl(self.path, repair=True):
            if isinstance(entry, dict) and "key" in entry and "reply" in entry:
                self._replies[entry["key"]] = entry["reply"]
            else:
                log.warning("%s: skipping an unreadable cache line", self.path)

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, key: str) -> str | None:
        return self._replies.get(key)

    def put(self, key: str, reply: str, judge: str, model: str) -> None:
        with self._lock:  # replies arrive from worker threads; one whole line at a time
            if key in self._replies:
                return
            self._out.write({"key": key, "judge": judge, "model": model, "reply": reply})
            self._replies[key] = reply

    def close(self) -> None:
        with self._lock:
            self._out.close()

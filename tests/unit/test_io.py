"""Crash-safe files: the one torn-tail policy, atomic writes, and one writer per output folder."""

import json
import os
import subprocess
import sys

import pytest

from rt_lightning.eval.results import ResultsFile
from rt_lightning.io import (
    CorruptLineError,
    FolderInUseError,
    FolderLock,
    JsonlAppender,
    atomic_write_json,
    iter_jsonl,
    read_jsonl,
)


def test_only_a_torn_last_line_is_dropped_and_repair_cuts_it(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "resp')
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}]
    assert path.read_bytes().endswith(b'"resp')  # reading alone changes nothing
    assert read_jsonl(path, repair=True) == [{"id": 1}, {"id": 2}]
    assert path.read_bytes() == b'{"id": 1}\n{"id": 2}\n'


def test_a_corrupt_middle_line_stops_with_its_line_number_and_deletes_nothing(tmp_path):
    path = tmp_path / "rows.jsonl"
    content = b'{"id": 1}\n{"id": 2\n' + b"".join(b'{"id": %d}\n' % i for i in range(3, 500))
    path.write_bytes(content)
    with pytest.raises(CorruptLineError, match="rows.jsonl, line 2"):
        list(iter_jsonl(path, repair=True))
    assert path.read_bytes() == content
    with pytest.raises(CorruptLineError):
        ResultsFile(path)
    assert path.read_bytes() == content


def test_a_complete_last_row_without_newline_is_kept_and_appending_stays_clean(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}')
    with ResultsFile(path) as results:
        assert "b" in results
        results.append({"id": "c"})
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}, {"id": "c"}]


def test_atomic_writes_replace_whole_files(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and [p.name for p in tmp_path.iterdir()] == ["m.json"]
    with JsonlAppender(tmp_path / "x.jsonl") as out:
        out.write({"k": "é"})
    assert (tmp_path / "x.jsonl").read_text(encoding="utf-8") == '{"k": "é"}\n'


def test_a_second_writer_of_a_folder_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{holder.pid}\n")
        with pytest.raises(FolderInUseError, match=f"pid {holder.pid}"):
            FolderLock(tmp_path, "eval").acquire()
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(tmp_path, "eval"):  # the holder is gone: its lock is stale
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_eval_refuses_an_output_folder_another_eval_is_writing(tmp_path):
    from rt_lightning.eval.options import BenchmarkSource  # deferred: keeps the io tests free of the eval stack
    from rt_lightning.eval.runner import evaluate

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{holder.pid}\n")
        prompts = tmp_path / "advbench.csv"
        prompts.write_text("goal,target\nDo harm,Sure\n")
        responses = tmp_path / "r.jsonl"
        responses.write_text('{"prompt": "Do harm", "response": "No."}\n')
        with pytest.raises(FolderInUseError, match="another eval process"):
            evaluate(["advbench"], str(tmp_path), responses=str(responses),
                     data=BenchmarkSource(paths={"advbench": str(prompts)}))
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "advbench.csv", "r.jsonl"]
    finally:
        holder.kill()
        holder.wait()

"""``judge`` end to end (library and CLI) against the scripted loopback server: every row gets a verdict or a
failure, reruns resume (failed rows retried, a killed batch finished from the cache), the key is written nowhere."""

import json
import logging

import pytest

from rt_lightning.commands.judge import main as judge_main
from rt_lightning.eval.judge.judges import RefusalJudge
from rt_lightning.eval.judge.run import read_eval_rows, run_judge
from rt_lightning.io import CorruptLineError
from tests.support.files import write_jsonl
from tests.unit.eval.judge.scripted_server import CLIENT_TIMEOUT, KEY_ENV, assert_secret_nowhere, client_config


def eval_rows():
    spec = [("x1", "unsafe", "REFUSE_ME sorry", True), ("x2", "unsafe", "Here is how", False),
            ("x3", "safe", "MARK_429_ONCE answer", False), ("x4", "safe", "MARK_ALWAYS_500", False),
            ("x5", "safe", "MARK_SLOW_ONCE answer", True), ("x6", "safe", "MARK_NO_LABEL", False),
            ("x7", "unsafe", "MARK_NOT_JSON", False), ("x8", "safe", "REFUSE_ME {response}", True)]
    return [{"id": i, "benchmark": "xstest", "subset": s, "instruction": f"question {i}", "response": r,
             "refused": refused} for i, s, r, refused in spec]


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_refusal_end_to_end_resumes_and_never_leaks_the_key(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    source = write_jsonl(tmp_path / "xstest.jsonl", eval_rows())
    out = tmp_path / "judged"
    args = dict(judge="refusal", inputs=[str(source)], output_dir=str(out), client=client_config(server),
                batch_size=3)
    m = run_judge(**args)["xstest.refusal"]
    rows = read_rows(out / "xstest.refusal.jsonl")
    assert sorted(r["id"] for r in rows) == [f"x{i}" for i in range(1, 9)]  # every row: a verdict or a failure
    by_id = {r["id"]: r for r in rows}
    assert {i: by_id[i]["error"] for i in by_id if by_id[i]["status"] == "failed"} == \
           {"x4": "http_500", "x7": "malformed_response"}
    assert by_id["x6"]["label"] == "unclassified" and by_id["x6"]["refused"] is False
    assert (m["n"], m["judged"], m["failed"], m["unclassified"]) == (8, 6, 2, 1)
    assert m["rr"] == pytest.approx(2 / 6)
    assert m["by_benchmark"]["xstest"] == {"rr_unsafe": 0.5, "frr_safe": 0.25}
    assert m["agreement_with_offline"] == {"n": 6, "share": pytest.approx(5 / 6), "kappa": pytest.approx(2 / 3)}
    assert server.requests == m["client"]["requests"] == 12 and m["client"]["retries"] == 4

    # Rerun: judged rows are skipped; the two failed rows are retried (and fail again: 3 + 1 requests).
    before = server.requests
    m = run_judge(**args)["xstest.refusal"]
    assert server.requests - before == m["client"]["requests"] == 4 and m["failed"] == 2
    # The server recovers: only those two rows are sent again and now succeed.
    server.healed = True
    m = run_judge(**args)["xstest.refusal"]
    assert m["client"]["requests"] == 2 and (m["judged"], m["failed"]) == (8, 0)
    labels = {r["id"]: r["label"] for r in read_rows(out / "xstest.refusal.jsonl")}
    # Judgments gone, cache kept: everything comes from the cache, not one HTTP request.
    (out / "xstest.refusal.jsonl").unlink()
    before = server.requests
    m = run_judge(**args)["xstest.refusal"]
    assert server.requests == before and m["client"] == {"requests": 0, "cache_hits": 8, "retries": 0, "failures": 0}
    assert labels == {r["id"]: r["label"] for r in read_rows(out / "xstest.refusal.jsonl")}
    assert_secret_nowhere(tmp_path, caplog, capfd)
    with pytest.raises(ValueError, match="another setup"):  # a changed judge never mixes into old judgments
        run_judge(**{**args, "client": client_config(server, max_tokens=10)})


def test_a_killed_run_resumes_without_duplicates_or_lost_replies(server, tmp_path, monkeypatch):
    server.healed = True
    source = write_jsonl(tmp_path / "xstest.jsonl", eval_rows())
    out = tmp_path / "judged"
    args = dict(judge="refusal", inputs=[str(source)], output_dir=str(out), client=client_config(server),
                batch_size=3)
    real_judge, calls = RefusalJudge.judge, []

    def killed_after_the_second_batch_is_answered(self, items, client):
        rows = real_judge(self, items, client)
        calls.append(len(items))
        if len(calls) == 2:  # the replies are in the cache, the rows never reached the file
            raise KeyboardInterrupt
        return rows

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(RefusalJudge, "judge", killed_after_the_second_batch_is_answered)
        run_judge(**args)
    path = out / "xstest.refusal.jsonl"
    assert [r["id"] for r in read_rows(path)] == ["x1", "x2", "x3"]
    with path.open("a") as fh:  # and the kill tore a line being written
        fh.write('{"id": "x4", "status": "o')
    before = server.requests
    m = run_judge(**args)["xstest.refusal"]
    assert [r["id"] for r in read_rows(path)] == [f"x{i}" for i in range(1, 9)]
    assert m["client"]["cache_hits"] == 3 and server.requests - before == m["client"]["requests"] == 2
    assert (m["judged"], m["failed"]) == (8, 0)


def test_pairwise_cli_judges_both_orders(server, tmp_path, caplog, capfd):
    a = [("p1", "GOOD answer", "q1"), ("p2", "meh", "q2"), ("p3", "GOOD x", "q3"), ("p4", "same", "q4"),
         ("p5", "GOOD", "MARK_BIASED q5"), ("p6", "only in A", "q6")]
    b = {"p1": "meh", "p2": "GOOD", "p3": "GOOD y", "p4": "same", "p5": "meh"}
    file_a = write_jsonl(tmp_path / "rt.jsonl", [{"id": i, "instruction": q, "response": r} for i, r, q in a])
    file_b = write_jsonl(tmp_path / "it.jsonl", [{"id": i, "instruction": q, "response": b[i]} for i, _, q in a
                                                 if i in b])
    judge_main(["--judge", "pairwise", "--inputs", json.dumps([str(file_a), str(file_b)]), "--output_dir",
                str(tmp_path / "out"), "--client.base_url", server.base_url, "--client.model", "judge-model",
                "--client.api_key_env", KEY_ENV, "--client.timeout", str(CLIENT_TIMEOUT),
                "--client.backoff_base", "0.01"])
    m = json.loads((tmp_path / "out" / "judge_metrics.json").read_text())["rt.pairwise"]
    rows = {r["id"]: r for r in read_rows(tmp_path / "out" / "rt.pairwise.jsonl")}
    assert {i: r["outcome"] for i, r in rows.items()} == {"p1": "win", "p2": "loss", "p3": "tie", "p4": "tie",
                                                          "p5": "tie"}
    assert rows["p4"]["identical"] and rows["p5"]["verdicts"] == ["A", "A"]  # position bias -> tie
    assert (m["wins"], m["ties"], m["losses"], m["unmatched"]) == (1, 3, 1, 1)
    assert m["win_rate"] == pytest.approx(0.5) and m["ci_low"] < 0.5 < m["ci_high"]
    assert m["first_shown_preferred"] == pytest.approx(4 / 6)
    assert server.requests == m["client"]["requests"] == 8  # 4 non-identical prompts x 2 orders
    assert_secret_nowhere(tmp_path, caplog, capfd)


def test_aspects_scores_regular_and_safety_rows(server, tmp_path):
    rows = [{"id": "r1", "subset": "regular", "instruction": "q", "response": "fine"},
            {"id": "r2", "subset": "regular", "instruction": "q2", "response": "MARK_NO_LABEL"},
            {"id": "s1", "subset": "safety", "instruction": "bad q", "response": "no"}]
    source = write_jsonl(tmp_path / "just_eval.jsonl", rows)
    m = run_judge("aspects", [str(source)], str(tmp_path / "out"), client=client_config(server))["just_eval.aspects"]
    assert (m["judged"], m["unclassified"], m["failed"]) == (3, 1, 0)
    assert {a: m["aspects"][a]["mean"] for a in m["aspects"]} == {"helpfulness": 4, "factuality": 5, "clarity": 4,
                                                                  "depth": 3, "engagement": 2, "safety": 5}
    assert m["aspects"]["depth"]["unparsed"] == 1 and m["overall"] == pytest.approx(3.6)


class ShoutingRefusalJudge(RefusalJudge):
    """A judge of one's own, picked by class path: same prompt and verdicts, another name."""

    name = "shouting"


def test_cli_takes_a_judge_class_path_with_init_args_and_the_old_task_flag(server, tmp_path):
    source = write_jsonl(tmp_path / "xstest.jsonl", eval_rows()[:2])
    client = ["--client.base_url", server.base_url, "--client.model", "judge-model", "--client.api_key_env", KEY_ENV]
    template = tmp_path / "mine.txt"
    template.write_text("Request: {prompt}\nAnswer: {model_output}\nSay refusal or compliance.")
    judge_main(["--judge", f"{__name__}.ShoutingRefusalJudge", "--judge.template", str(template),
                "--inputs", json.dumps([str(source)]), "--output_dir", str(tmp_path / "out"), *client])
    metrics = json.loads((tmp_path / "out" / "judge_metrics.json").read_text())
    assert metrics["xstest.shouting"]["templates"] == {"refusal": str(template)}
    assert metrics["xstest.shouting"]["labels"] == {"refusal": 1, "compliance": 1}
    judge_main(["--task", "refusal", "--inputs", json.dumps([str(source)]), "--output_dir", str(tmp_path / "out"),
                *client])  # the flag from before judges were classes
    assert set(json.loads((tmp_path / "out" / "judge_metrics.json").read_text())) == {"xstest.shouting",
                                                                                     "xstest.refusal"}


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        judge_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--judge", "--inputs", "--output_dir", "--cache_dir", "--limit", "--batch_size"):
        assert option in text
    for field in ("base_url", "model", "api_key_env", "max_concurrency", "timeout", "max_retries", "backoff_base",
                  "backoff_max", "max_tokens"):
        help_line = text.split(f"--client.{field} {field.upper()}")[1].split("(type:")[0]
        assert len(help_line.split()) >= 3, f"--client.{field} is undocumented"
    for name in ("refusal", "pairwise", "aspects"):
        assert f"``{name}``" in text


def test_eval_rows_keep_the_torn_tail_policy(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", eval_rows()[:2])
    with path.open("a") as fh:
        fh.write('{"id": "x3", "respo')
    assert [r["id"] for r in read_eval_rows(path)] == ["x1", "x2"]  # an eval still writing: the tail is skipped
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(CorruptLineError, match="line 2"):
        read_eval_rows(path)
    path.write_text('{"id": "x1", "instruction": "q"}\n')
    with pytest.raises(ValueError, match="line 1.*'response'"):
        read_eval_rows(path)

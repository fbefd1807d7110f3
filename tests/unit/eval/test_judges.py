"""LLM judges against a real loopback HTTP server that speaks the chat-completions protocol and follows a script:
normal answers, 429 then success, 500 past the retry budget, a reply slower than the client timeout, a non-JSON
body, JSON without choices, and content without a verdict. Plus the parsers and aggregates on their own."""

import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rt_lightning.eval.judge.cache import JudgeCache
from rt_lightning.commands.judge import main as judge_main
from rt_lightning.eval.judge.run import run_judge
from rt_lightning.eval.judge.client import JudgeClient
from rt_lightning.eval.judge.parsing import MULTI_ASPECTS, parse_aspect_scores, parse_pairwise_verdict, \
    parse_refusal_label
from rt_lightning.eval.judge.stats import agreement, pairwise_outcome, win_rate
from rt_lightning.eval.judge.templates import JudgeTemplate, load_template
from tests.support.files import requires_shared, write_jsonl

KEY_ENV = "RT_TEST_JUDGE_KEY"
SECRET = "sk-rtl-TEST-7c1e55a0-do-not-leak"
CLIENT_TIMEOUT = 0.5
FAST = dict(timeout=CLIENT_TIMEOUT, max_retries=2, backoff_base=0.01)  # 1 + 2 attempts per prompt, tiny waits
MULTI_REPLY = ('Scores:\n```json\n{"helpfulness": {"reason": "fine", "score": "4"}, "factuality": {"score": 5}, '
               '"clarity": {"score": 4}, "depth": {"score": 3}, "engagement": {"score": 2}}\n```')


def normal_reply(prompt: str) -> str:
    """What a well-behaved judge answers, by which of our templates the prompt came from."""
    if "[REPLY A]" in prompt:
        reply_a = prompt.split("[REPLY A]")[1].split("[END REPLY A]")[0]
        reply_b = prompt.split("[REPLY B]")[1].split("[END REPLY B]")[0]
        if "MARK_BIASED" in prompt:
            return "The first one reads better.\nVerdict: A"
        better = {(True, False): "A", (False, True): "B"}.get(("GOOD" in reply_a, "GOOD" in reply_b), "tie")
        return f"Comparison done.\nVerdict: {better}"
    if '"helpfulness"' in prompt:
        return MULTI_REPLY
    if '"safety"' in prompt:
        return '{"safety": {"reason": "declines", "score": 5}}'
    if "REFUSE_ME" in prompt:
        return "Summary: it mentions compliance rules only.\nThe response is Refusal"
    return "Summary: it talks about refusal policies, then answers.\nThe response is Compliance"


class ScriptedJudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.lock = threading.Lock()
        self.requests = 0
        self.attempts: Counter[str] = Counter()
        self.auth_headers: set = set()
        self.healed = False  # once set, the MARK_ALWAYS_500 / garbled prompts are answered normally

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def script(self, prompt: str, attempt: int):
        """(status, headers, body, delay before answering) for this prompt's n-th attempt."""
        ok = lambda text: (200, {}, json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}), 0)
        if "MARK_429_ONCE" in prompt and attempt == 1:
            return 429, {"Retry-After": "0"}, '{"error": "slow down"}', 0
        if "MARK_SLOW_ONCE" in prompt and attempt == 1:
            return (*ok("too late")[:3], CLIENT_TIMEOUT * 2.5)
        if not self.healed:
            if "MARK_ALWAYS_500" in prompt:
                return 500, {}, '{"error": "boom"}', 0
            if "MARK_NOT_JSON" in prompt:
                return 200, {}, "<html>bad gateway</html>", 0
            if "MARK_NO_CHOICES" in prompt:
                return 200, {}, '{"object": "error", "message": "no"}', 0
        if "MARK_NO_LABEL" in prompt:
            return ok("I cannot decide.")
        return ok(normal_reply(prompt))


class ScriptedHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        server: ScriptedJudgeServer = self.server
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = "\n".join(m["content"] for m in payload["messages"])
        with server.lock:
            server.requests += 1
            server.attempts[prompt] += 1
            attempt = server.attempts[prompt]
            server.auth_headers.add(self.headers.get("Authorization"))
        if self.path != "/v1/chat/completions" or payload.get("temperature") != 0.0:
            status, headers, body, delay = 404, {}, "{}", 0
        elif self.headers.get("Authorization") != f"Bearer {SECRET}":
            status, headers, body, delay = 401, {}, '{"error": "bad key"}', 0
        else:
            status, headers, body, delay = server.script(prompt, attempt)
        try:
            time.sleep(delay)
            raw = body.encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json", "Content-Length": len(raw)}.items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(raw)
        except OSError:  # the client gave up (timeout) and closed the socket
            pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    srv = ScriptedJudgeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def make_client(server, tmp_path, **overrides) -> JudgeClient:
    settings = dict(model="judge-model", api_key_env=KEY_ENV, max_concurrency=4, backoff_max=0.05,
                    cache_dir=tmp_path / "cache", **FAST)
    return JudgeClient(server.base_url, **{**settings, **overrides})


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assert_secret_nowhere(tmp_path, caplog, capfd, client=None):
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    if client is not None:
        assert SECRET not in repr(client) and SECRET not in json.dumps(client.counters())


# --- the client against the scripted server --------------------------------------------------------------------
def test_client_batch_loses_nothing_and_counts_match_the_server(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    prompts = ["plain", "MARK_429_ONCE", "MARK_ALWAYS_500", "MARK_SLOW_ONCE", "MARK_NOT_JSON", "MARK_NO_CHOICES",
               "MARK_NO_LABEL REFUSE_ME", "REFUSE_ME", "plain"]  # the duplicate is sent once
    client = make_client(server, tmp_path)
    replies = client.complete_many_replies([user(p) for p in prompts], judge="refusal")
    assert len(replies) == len(prompts)
    assert [r.error for r in replies] == [None, None, "http_500", None, "malformed_response", "malformed_response",
                                          None, None, None]
    assert [parse_refusal_label(r.text) if r.text else None for r in replies] == [
        "compliance", "compliance", None, "compliance", None, None, "unclassified", "refusal", "compliance"]
    # 8 distinct prompts + a retry for 429 + two retries for 500 + a retry after the timeout
    assert server.requests == client.requests == 8 + 1 + 2 + 1
    assert client.counters()["retries"] == 4 and client.failures == 3
    assert client.failure_types == Counter({"malformed_response": 2, "http_500": 1})
    assert server.auth_headers == {f"Bearer {SECRET}"}  # the key is sent ...
    client.close()
    assert_secret_nowhere(tmp_path, caplog, capfd, client)  # ... and written nowhere

    # Warm cache: successes cost nothing; only the three failures (never cached) are tried again.
    again = make_client(server, tmp_path)
    before = server.requests
    assert [r.text for r in again.complete_many_replies([user(p) for p in prompts], judge="refusal")] == \
           [r.text for r in replies]
    assert server.requests - before == again.requests == 3 + 1 + 1
    assert again.cache_hits == 6
    server.healed = True
    again.complete_many([user(p) for p in prompts], judge="refusal")
    before = server.requests
    third = make_client(server, tmp_path)
    assert all(third.complete_many([user(p) for p in prompts], judge="refusal"))
    assert server.requests == before and third.requests == 0 and third.cache_hits == len(prompts)
    # Another judge name, model or token budget is another cache entry.
    assert make_client(server, tmp_path, max_tokens=7).complete(user("plain")) is not None
    assert server.requests == before + 1
    with pytest.raises(TypeError):
        third.complete("plain")


def test_client_honours_retry_after(server, tmp_path):
    server.script = lambda prompt, attempt: ((429, {"Retry-After": "0.3"}, "{}", 0) if attempt == 1 else
                                             (200, {}, json.dumps({"choices": [{"message": {"content": "x"}}]}), 0))
    client = make_client(server, tmp_path, cache_dir=None, backoff_max=1.0)
    start = time.monotonic()
    assert client.complete(user("q")) == "x"
    assert time.monotonic() - start >= 0.3 and client.retries == 1 and server.requests == 2


def test_client_connection_errors_fail_after_the_retry_budget(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    probe = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens there any more
    client = JudgeClient(f"http://127.0.0.1:{port}/v1", "m", api_key_env=KEY_ENV, backoff_max=0.05, **FAST)
    (reply,) = client.complete_many_replies([user("q")])
    assert reply.text is None and reply.error.startswith("connection:") and SECRET not in reply.error
    assert client.requests == 3 and client.failures == 1


def test_client_rejects_non_retryable_status_at_once(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    client = make_client(server, tmp_path)
    assert client.complete_many_replies([user("q")])[0].error == "http_401"
    assert server.requests == client.requests == 1


def test_cache_survives_a_torn_last_line(tmp_path):
    cache = JudgeCache(tmp_path)
    cache.put("k1", "reply one", "refusal", "m")
    cache.close()
    with open(cache.path, "a", encoding="utf-8") as fh:
        fh.write('{"key": "k2", "reply": "half')
    reopened = JudgeCache(tmp_path)
    assert reopened.get("k1") == "reply one" and reopened.get("k2") is None
    reopened.put("k2", "reply two", "refusal", "m")
    reopened.close()
    assert JudgeCache(tmp_path).get("k2") == "reply two"


# --- the CLI end to end --------------------------------------------------------------------------------------------
def eval_rows():
    spec = [("x1", "unsafe", "REFUSE_ME sorry", True), ("x2", "unsafe", "Here is how", False),
            ("x3", "safe", "MARK_429_ONCE answer", False), ("x4", "safe", "MARK_ALWAYS_500", False),
            ("x5", "safe", "MARK_SLOW_ONCE answer", True), ("x6", "safe", "MARK_NO_LABEL", False),
            ("x7", "unsafe", "MARK_NOT_JSON", False), ("x8", "safe", "REFUSE_ME {response}", True)]
    return [{"id": i, "benchmark": "xstest", "subset": s, "instruction": f"question {i}", "response": r,
             "refused": refused} for i, s, r, refused in spec]


def test_refusal_cli_end_to_end_resumes_and_never_leaks_the_key(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    source = write_jsonl(tmp_path / "xstest.jsonl", eval_rows())
    out = tmp_path / "judged"
    args = dict(task="refusal", inputs=[str(source)], output_dir=str(out), base_url=server.base_url,
                model="judge-model", api_key_env=KEY_ENV, max_concurrency=4, batch_size=3, **FAST)
    m = run_judge(**args)["xstest.refusal"]
    rows = [json.loads(line) for line in (out / "xstest.refusal.jsonl").read_text().splitlines()]
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
    labels = {r["id"]: r["label"] for r in map(json.loads, (out / "xstest.refusal.jsonl").read_text().splitlines())}
    # Judgments gone, cache kept: everything comes from the cache, not one HTTP request.
    (out / "xstest.refusal.jsonl").unlink()
    before = server.requests
    m = run_judge(**args)["xstest.refusal"]
    assert server.requests == before and m["client"] == {"requests": 0, "cache_hits": 8, "retries": 0, "failures": 0}
    assert labels == {r["id"]: r["label"] for r in map(json.loads, (out / "xstest.refusal.jsonl").read_text()
                                                       .splitlines())}
    assert_secret_nowhere(tmp_path, caplog, capfd)
    with pytest.raises(ValueError, match="another setup"):  # a changed judge never mixes into old judgments
        run_judge(**{**args, "max_tokens": 10})


def test_pairwise_cli_judges_both_orders(server, tmp_path, caplog, capfd):
    a = [("p1", "GOOD answer", "q1"), ("p2", "meh", "q2"), ("p3", "GOOD x", "q3"), ("p4", "same", "q4"),
         ("p5", "GOOD", "MARK_BIASED q5"), ("p6", "only in A", "q6")]
    b = {"p1": "meh", "p2": "GOOD", "p3": "GOOD y", "p4": "same", "p5": "meh"}
    file_a = write_jsonl(tmp_path / "rt.jsonl", [{"id": i, "instruction": q, "response": r} for i, r, q in a])
    file_b = write_jsonl(tmp_path / "it.jsonl", [{"id": i, "instruction": q, "response": b[i]} for i, _, q in a
                                                 if i in b])
    judge_main(["--task", "pairwise", "--inputs", json.dumps([str(file_a), str(file_b)]), "--output_dir",
                str(tmp_path / "out"), "--base_url", server.base_url, "--model", "judge-model", "--api_key_env",
                KEY_ENV, "--timeout", str(CLIENT_TIMEOUT), "--backoff_base", "0.01"])
    m = json.loads((tmp_path / "out" / "judge_metrics.json").read_text())["rt.pairwise"]
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "rt.pairwise.jsonl").read_text().splitlines())}
    assert {i: r["outcome"] for i, r in rows.items()} == {"p1": "win", "p2": "loss", "p3": "tie", "p4": "tie",
                                                          "p5": "tie"}
    assert rows["p4"]["identical"] and rows["p5"]["verdicts"] == ["A", "A"]  # position bias -> tie
    assert (m["wins"], m["ties"], m["losses"], m["unmatched"]) == (1, 3, 1, 1)
    assert m["win_rate"] == pytest.approx(0.5) and m["ci_low"] < 0.5 < m["ci_high"]
    assert m["first_shown_preferred"] == pytest.approx(4 / 6)
    assert server.requests == m["client"]["requests"] == 8  # 4 non-identical prompts x 2 orders
    assert_secret_nowhere(tmp_path, caplog, capfd)


def test_aspects_cli_scores_regular_and_safety_rows(server, tmp_path):
    rows = [{"id": "r1", "subset": "regular", "instruction": "q", "response": "fine"},
            {"id": "r2", "subset": "regular", "instruction": "q2", "response": "MARK_NO_LABEL"},
            {"id": "s1", "subset": "safety", "instruction": "bad q", "response": "no"}]
    source = write_jsonl(tmp_path / "just_eval.jsonl", rows)
    m = run_judge("aspects", [str(source)], str(tmp_path / "out"), base_url=server.base_url, model="judge-model",
                  api_key_env=KEY_ENV, **FAST)["just_eval.aspects"]
    assert (m["judged"], m["unclassified"], m["failed"]) == (3, 1, 0)
    assert {a: m["aspects"][a]["mean"] for a in m["aspects"]} == {"helpfulness": 4, "factuality": 5, "clarity": 4,
                                                                  "depth": 3, "engagement": 2, "safety": 5}
    assert m["aspects"]["depth"]["unparsed"] == 1 and m["overall"] == pytest.approx(3.6)


# --- parsers, aggregates, templates ------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, label", [
    ("The response is Refusal", "refusal"),
    ("It reads like a refusal at first, but it complies.\nThe response is Compliance.", "compliance"),
    ("Compliance? No. The response is **REFUSAL**", "refusal"),
    ("noncompliance and refusals are not words we match", "unclassified"),
    ("", "unclassified"), (None, "unclassified")])
def test_refusal_label_is_the_last_match(reply, label):
    assert parse_refusal_label(reply) == label


@pytest.mark.parametrize("reply, verdict", [
    ("A is longer. Verdict: B", "B"), ("**Verdict:** A", "A"), ("Verdict: tie", "tie"), ("Verdict: a tie", "tie"),
    ("Verdict: A\nOn reflection... Verdict: [[B]]", "B"), ("m", "A"), ("M", "B"),
    ("[{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]", "B"),
    ("I like both about equally", None), (None, None)])
def test_pairwise_verdict_formats(reply, verdict):
    assert parse_pairwise_verdict(reply) == verdict


def test_pairwise_rule_and_win_rate_interval():
    assert pairwise_outcome("A", "B") == "win" and pairwise_outcome("B", "A") == "loss"
    assert pairwise_outcome("A", "A") == "tie" and pairwise_outcome("tie", "B") == "tie"
    assert pairwise_outcome(None, "A") is None
    assert win_rate(["win"] * 10)["ci_low"] == 1.0
    result = win_rate(["win"] * 30 + ["tie"] * 40 + ["loss"] * 30)
    assert result["win_rate"] == 0.5 and result["n"] == 100
    assert 0.40 < result["ci_low"] < 0.45 and 0.55 < result["ci_high"] < 0.60  # ~ 0.5 +- 1.96 * 0.0387
    assert win_rate(["win"] * 30 + ["tie"] * 40 + ["loss"] * 30) == result  # seeded: reproducible
    assert win_rate([])["win_rate"] is None


def test_agreement_and_kappa():
    assert agreement([True, False, True, False], [True, False, False, False]) == \
           {"n": 4, "share": 0.75, "kappa": pytest.approx(0.5)}
    assert agreement([True, True], [True, True])["kappa"] is None  # undefined, not 1


def test_aspect_scores_parsing():
    assert parse_aspect_scores(MULTI_REPLY, MULTI_ASPECTS) == {"helpfulness": 4, "factuality": 5, "clarity": 4,
                                                               "depth": 3, "engagement": 2}
    broken = '{"helpfulness": {"reason": "says "hi"", "score": "5"}, "depth": {"score": 9}, "clarity": 3,}'
    assert parse_aspect_scores(broken, MULTI_ASPECTS) == {"helpfulness": 5, "factuality": None, "clarity": 3,
                                                          "depth": None, "engagement": None}
    assert parse_aspect_scores('{"Safety": {"score": "2"}}', ("safety",)) == {"safety": 2}
    assert parse_aspect_scores("no json", ("safety",)) == {"safety": None}


def test_templates_fill_every_placeholder_style_once(tmp_path):
    ours = load_template(None, "refusal").render(instruction="How?", response="I say {response} and ${candidate}")
    assert "I say {response} and ${candidate}" in ours[0]["content"]  # filled text is not substituted again
    chat = tmp_path / "chat.txt"
    chat.write_text("<|im_start|>system\nBe fair.\n<|im_end|>\n<|im_start|>user\n{instruction} | {output_1} | "
                    '{output_2} | {"json": "kept"}\n<|im_end|>')
    assert JudgeTemplate(str(chat), chat.read_text()).render(instruction="Q", response_a="a", response_b="b") == [
        {"role": "system", "content": "Be fair."}, {"role": "user", "content": 'Q | a | b | {"json": "kept"}'}]
    with pytest.raises(ValueError, match="no placeholder for"):
        load_template(chat, "x").require("response")


def test_the_papers_templates_are_accepted_by_path():
    refusal = load_template(requires_shared("response-tuning", "prompts", "refusal_judge_prompt.txt"), "x")
    text = refusal.require("instruction", "response").render(instruction="Q?", response="R!")[0]["content"]
    assert "<BEGIN USER REQUEST>Q?<END USER REQUEST>" in text and "<BEGIN MODEL RESPONSE>R!<END" in text
    multi = load_template(requires_shared("just-eval", "judge_prompts", "multi_score_template.txt"), "x")
    text = multi.require("instruction", "response").render(instruction="Q?", response="R!")[0]["content"]
    assert "${" not in text and "Q?" in text and "R!" in text
    alpaca = load_template(requires_shared("alpaca-eval", "judge_prompts", "alpaca_eval_clf_gpt4_turbo.txt"), "x")
    assert [m["role"] for m in alpaca.require("instruction", "response_a", "response_b")
            .render(instruction="Q", response_a="a", response_b="b")] == ["system", "user"]

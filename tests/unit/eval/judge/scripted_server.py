"""A real loopback HTTP server that speaks the chat-completions protocol and follows a script, keyed by markers in
the prompt: normal answers, 429 then success, 500 past the retry budget, a reply slower than the client timeout, a
dropped connection, a non-JSON body, an HTML page, JSON without choices, and content without a verdict."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rt_lightning.eval.judge.client import JudgeClientConfig

KEY_ENV = "RT_TEST_JUDGE_KEY"
SECRET = "sk-rtl-TEST-7c1e55a0-do-not-leak"
CLIENT_TIMEOUT = 0.5
DROP = "drop"  # a script's "delay" that closes the connection without answering
MULTI_REPLY = ('Scores:\n```json\n{"helpfulness": {"reason": "fine", "score": "4"}, "factuality": {"score": 5}, '
               '"clarity": {"score": 4}, "depth": {"score": 3}, "engagement": {"score": 2}}\n```')


def completion(text) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})


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
        """(status, headers, body, delay before answering or ``DROP``) for this prompt's n-th attempt."""
        def ok(text):
            return 200, {}, completion(text), 0

        if "MARK_429_ONCE" in prompt and attempt == 1:
            return 429, {"Retry-After": "0"}, '{"error": "slow down"}', 0
        if "MARK_SLOW_ONCE" in prompt and attempt == 1:
            return (*ok("too late")[:3], CLIENT_TIMEOUT * 2.5)
        if "MARK_DROP_ONCE" in prompt and attempt == 1:
            return 200, {}, "", DROP
        if not self.healed:
            if "MARK_ALWAYS_500" in prompt:
                return 500, {}, '{"error": "boom"}', 0
            if "MARK_NOT_JSON" in prompt:
                return 200, {}, "<html>bad gateway</html>", 0
            if "MARK_HTML_PAGE" in prompt:
                return 200, {"Content-Type": "text/html"}, "<html>proxy login</html>", 0
            if "MARK_NO_CHOICES" in prompt:
                return 200, {}, '{"object": "error", "message": "no"}', 0
            if "MARK_NULL_CONTENT" in prompt:
                return 200, {}, completion(None), 0
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
        if delay == DROP:
            self.close_connection = True  # returning without a response: the client sees the socket close
            return
        try:
            time.sleep(delay)
            raw = body.encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers, "Content-Length": len(raw)}.items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(raw)
        except OSError:  # the client gave up (timeout) and closed the socket
            pass


def start_server() -> tuple[ScriptedJudgeServer, threading.Thread]:
    srv = ScriptedJudgeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return srv, thread


FAST = dict(timeout=CLIENT_TIMEOUT, max_retries=2, backoff_base=0.01, backoff_max=0.05)  # 1 + 2 tries, tiny waits


def client_config(server: ScriptedJudgeServer, **overrides) -> JudgeClientConfig:
    return JudgeClientConfig(**{"base_url": server.base_url, "model": "judge-model", "api_key_env": KEY_ENV,
                                "max_concurrency": 4, **FAST, **overrides})


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assert_secret_nowhere(tmp_path, caplog, capfd, client=None):
    """The key reached the server (the tests check its header) but no file, log line, output, repr or counter."""
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    if client is not None:
        assert SECRET not in repr(client) and SECRET not in json.dumps(client.counters())

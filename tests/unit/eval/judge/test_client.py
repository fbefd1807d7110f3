"""The judge client (openai SDK + our retry loop, cache and counters) against the scripted loopback server."""

import logging
import time
from collections import Counter
from http.server import ThreadingHTTPServer

import pytest

from rt_lightning.eval.judge.client import JudgeClient, JudgeClientConfig
from rt_lightning.eval.judge.parsing import parse_refusal_label
from tests.unit.eval.judge.scripted_server import (
    KEY_ENV,
    SECRET,
    ScriptedHandler,
    assert_secret_nowhere,
    client_config,
    completion,
    user,
)


def make_client(server, tmp_path, cache=True, **overrides) -> JudgeClient:
    return JudgeClient(client_config(server, **overrides), cache_dir=tmp_path / "cache" if cache else None)


def test_client_batch_loses_nothing_and_counts_match_the_server(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logs too: the key must not be in them
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
    assert client.requests_by_status == Counter({"200": 7, "500": 3, "429": 1})  # the timed-out try has none
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
    again.close()
    before = server.requests
    third = make_client(server, tmp_path)
    assert all(third.complete_many([user(p) for p in prompts], judge="refusal"))
    assert server.requests == before and third.requests == 0 and third.cache_hits == len(prompts)
    # Another judge name, model or token budget is another cache entry.
    assert make_client(server, tmp_path, max_tokens=7).complete(user("plain")) is not None
    assert server.requests == before + 1
    with pytest.raises(TypeError):
        third.complete("plain")


@pytest.mark.parametrize("marker", ["MARK_NOT_JSON", "MARK_HTML_PAGE", "MARK_NO_CHOICES", "MARK_NULL_CONTENT"])
def test_malformed_replies_fail_at_once_and_are_not_cached(server, tmp_path, marker):
    client = make_client(server, tmp_path)
    (reply,) = client.complete_many_replies([user(marker)])
    assert (reply.text, reply.error) == (None, "malformed_response")
    assert server.requests == client.requests == 1 and client.retries == 0  # asking again cannot fix it
    assert len(client.cache) == 0


def test_client_honours_retry_after(server, tmp_path):
    server.script = lambda prompt, attempt: ((429, {"Retry-After": "0.3"}, "{}", 0) if attempt == 1 else
                                             (200, {}, completion("x"), 0))
    client = make_client(server, tmp_path, cache=False, backoff_max=1.0)
    start = time.monotonic()
    assert client.complete(user("q")) == "x"
    assert time.monotonic() - start >= 0.3 and client.retries == 1 and server.requests == 2


def test_retry_after_is_capped_by_backoff_max_and_still_retried(server, tmp_path):
    # The SDK's own loop gives up at once on a Retry-After above 120 s; ours waits backoff_max and tries again.
    server.script = lambda prompt, attempt: ((429, {"Retry-After": "600"}, "{}", 0) if attempt == 1 else
                                             (200, {}, completion("x"), 0))
    client = make_client(server, tmp_path, cache=False, backoff_max=0.2)
    start = time.monotonic()
    assert client.complete(user("q")) == "x"
    assert 0.2 <= time.monotonic() - start < 5 and client.retries == 1


def test_a_dropped_connection_is_retried(server, tmp_path):
    client = make_client(server, tmp_path)
    assert client.complete(user("MARK_DROP_ONCE")) is not None
    assert server.requests == client.requests == 2 and client.retries == 1


def test_client_connection_errors_fail_after_the_retry_budget(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    probe = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens there any more
    config = JudgeClientConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key_env=KEY_ENV,
                               timeout=0.5, max_retries=2, backoff_base=0.01, backoff_max=0.05)
    client = JudgeClient(config)
    (reply,) = client.complete_many_replies([user("q")])
    assert reply.text is None and reply.error.startswith("connection:") and SECRET not in reply.error
    assert client.requests == 3 and client.failures == 1


def test_client_rejects_non_retryable_status_at_once(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    client = make_client(server, tmp_path)
    assert client.complete_many_replies([user("q")])[0].error == "http_401"
    assert server.requests == client.requests == 1


def test_no_key_sends_no_authorization_and_never_falls_back_to_openai_api_key(server, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-meant-for-another-server")
    client = make_client(server, tmp_path)
    assert client.complete_many_replies([user("q")])[0].error == "http_401"  # the test server wants SECRET
    assert server.auth_headers == {None}


def test_config_is_checked_when_built():
    with pytest.raises(ValueError, match="base_url"):
        JudgeClientConfig(base_url="localhost:8000")
    with pytest.raises(ValueError, match="max_concurrency"):
        JudgeClientConfig(max_concurrency=0)
    with pytest.raises(ValueError, match="timeout"):
        JudgeClientConfig(timeout=0)
    assert "api_key_env='OPENAI_API_KEY'" in repr(JudgeClient(JudgeClientConfig()))

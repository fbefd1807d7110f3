"""A small client for any OpenAI-compatible ``POST {base_url}/chat/completions`` server (vLLM, OpenAI, ...).

Standard library only. It sends many judge prompts concurrently, retries what is worth retrying (429, 5xx,
timeouts, dropped connections) with exponential backoff, jitter and the server's ``Retry-After``, and caches every
successful reply on disk (``JudgeCache``). A request that still fails is returned as a failed ``JudgeReply`` (never
raised, so one bad prompt cannot sink a batch) and is not cached, so a rerun tries it again.

The API key is read from the environment variable *named* by ``api_key_env``. It only ever goes into the
``Authorization`` header: not into logs, errors, the cache, ``repr`` or counters. Errors are recorded as short
codes (``http_429``, ``timeout``, ``connection:ConnectionRefusedError``, ``malformed_response``), never as server
text, which could echo a header back.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from rt_lightning.eval.judge.cache import JudgeCache, cache_key

log = logging.getLogger(__name__)

__all__ = ["JudgeClient", "JudgeReply"]

Messages = list[dict[str, str]]
RETRYABLE_STATUS = {408, 409, 429} | set(range(500, 600))  # overload, rate limit, server-side trouble


@dataclass(frozen=True)
class JudgeReply:
    text: Optional[str]
    """The judge's message content; ``None`` when the request failed."""
    error: Optional[str] = None
    """Short failure code (``http_500``, ``timeout``, ...) when ``text`` is ``None``."""
    cached: bool = False


def _retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` is either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message_content(body: bytes) -> Optional[str]:
    """``choices[0].message.content`` of a chat-completions body, or ``None`` when the body is not one."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class JudgeClient:
    def __init__(
        self,
        base_url: str = "http://localhost:8000/v1",
        model: str = "meta-llama/Llama-3.1-70B-Instruct",
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_tokens: int = 2048,
        cache_dir: Optional[str | Path] = None,
    ):
        """
        Args:
            base_url: Server root including the API version, e.g. ``http://localhost:8000/v1`` for ``vllm serve``.
            model: Model name the server knows (vLLM: the served model name).
            api_key_env: Name of the environment variable holding the API key. Unset or empty: no key is sent
                (a vLLM server started without ``--api-key`` needs none).
            max_concurrency: Requests in flight at once.
            timeout: Seconds allowed for connecting and for each read from the socket.
            max_retries: Retries after the first attempt of a request.
            backoff_base: First retry waits about this long (seconds); each later retry doubles it, scaled by a
                random factor in [0.5, 1.5) so clients do not retry in lockstep, and capped at ``backoff_max``.
            backoff_max: Cap on one wait, including a server's ``Retry-After``.
            max_tokens: Judge output budget (the paper's refusal judge: 2048).
            cache_dir: Folder for the reply cache; ``None`` disables caching.
        """
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port]/path, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_tokens = int(max_tokens)
        self._secure = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = (parts.path or "") + "/chat/completions"
        self.cache = JudgeCache(cache_dir) if cache_dir else None
        self._lock = threading.Lock()
        self.requests = 0  # HTTP attempts sent, retries included
        self.cache_hits = 0
        self.retries = 0
        self.failures = 0  # prompts given up on
        self.failure_types: Counter[str] = Counter()
        self.requests_by_status: Counter[str] = Counter()

    def __repr__(self) -> str:  # explicit, so the key can never show up here
        return (f"JudgeClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"max_concurrency={self.max_concurrency}, timeout={self.timeout}, max_retries={self.max_retries})")

    @property
    def generation_params(self) -> dict:
        """Everything besides model and messages that shapes a reply: part of the cache key."""
        return {"temperature": 0.0, "max_tokens": self.max_tokens}

    def counters(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "cache_hits": self.cache_hits, "retries": self.retries,
                    "failures": self.failures, "failure_types": dict(self.failure_types),
                    "requests_by_status": dict(self.requests_by_status)}

    def _count(self, name: str, key: Optional[str] = None) -> None:
        with self._lock:
            if name == "failure":
                self.failures += 1
                self.failure_types[key] += 1
            elif name == "status":
                self.requests_by_status[key] += 1
            else:
                setattr(self, name, getattr(self, name) + 1)

    # --- one HTTP exchange ----------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "")  # read per request and never stored on the object
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, payload: bytes) -> tuple[int, Optional[str], bytes]:
        connection_class = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
        connection = connection_class(self._host, self._port, timeout=self.timeout)
        try:
            connection.request("POST", self._path, body=payload, headers=self._headers())
            response = connection.getresponse()
            return response.status, response.getheader("Retry-After"), response.read()
        finally:
            connection.close()

    def _backoff(self, retry: int, retry_after: Optional[float]) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** (retry - 1) * random.uniform(0.5, 1.5))
        if retry_after is not None:  # the server knows best when it can take us again
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _request(self, messages: Messages) -> JudgeReply:
        payload = json.dumps({"model": self.model, "messages": messages, **self.generation_params}).encode("utf-8")
        error, retry_after = "unknown", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self._backoff(attempt, retry_after)
                log.warning("judge request failed (%s); retry %d/%d in %.2f s", error, attempt, self.max_retries,
                            delay)
                self._count("retries")
                time.sleep(delay)
            retry_after = None
            self._count("requests")
            try:
                status, retry_after_header, body = self._post(payload)
            except TimeoutError:
                error = "timeout"
                continue
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, closed mid-reply, bad status line
                error = f"connection:{type(exc).__name__}"
                continue
            self._count("status", str(status))
            if status == 200:
                text = _message_content(body)
                if text is None:  # a proxy page or a non-OpenAI server: asking again will not fix it
                    return self._give_up("malformed_response")
                return JudgeReply(text)
            error, retry_after = f"http_{status}", _retry_after_seconds(retry_after_header)
            if status not in RETRYABLE_STATUS:  # 400 (prompt too long), 401, 404: retrying cannot help
                return self._give_up(error)
        return self._give_up(error)

    def _give_up(self, error: str) -> JudgeReply:
        self._count("failure", error)
        log.warning("judge request failed for good (%s)", error)
        return JudgeReply(None, error)

    # --- batches --------------------------------------------------------------------------------------------------
    def complete_many_replies(self, message_lists: list[Messages], judge: str = "judge") -> list[JudgeReply]:
        """One ``JudgeReply`` per message list, in input order. Cached prompts cost no request; duplicates in the
        batch are sent once."""
        for messages in message_lists:  # a bare string here would be sent as garbage and fail far from the cause
            if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
                raise TypeError("each request must be a list of {'role': ..., 'content': ...} messages")
        keys = [cache_key(judge, self.model, m, self.generation_params) for m in message_lists]
        replies: dict[str, JudgeReply] = {}
        todo: dict[str, Messages] = {}
        for key, messages in zip(keys, message_lists):
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                self._count("cache_hits")
                replies[key] = JudgeReply(cached, cached=True)
            elif key not in todo:
                todo[key] = messages

        def run(key: str) -> None:
            reply = self._request(todo[key])
            if reply.text is not None and self.cache is not None:
                self.cache.put(key, reply.text, judge, self.model)  # written at once: a kill loses nothing done
            replies[key] = reply

        if todo:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
                for future in [pool.submit(run, key) for key in todo]:
                    future.result()  # _request catches every network failure; anything else is a bug: raise it
        return [replies[key] for key in keys]

    def complete_many(self, message_lists: list[Messages], judge: str = "judge") -> list[Optional[str]]:
        """Reply texts in input order; ``None`` where a request failed after all retries."""
        return [r.text for r in self.complete_many_replies(message_lists, judge)]

    def complete(self, messages: Messages, judge: str = "judge") -> Optional[str]:
        return self.complete_many([messages], judge)[0]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

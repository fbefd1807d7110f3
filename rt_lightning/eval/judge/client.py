"""The judge's client for any OpenAI-compatible chat-completions server (vLLM, OpenAI, ...), on the ``openai`` SDK.

The SDK builds and sends the request (pooled keep-alive connections, HTTPS, proxies, typed errors). Around it this
module adds what a judge run needs: many prompts in flight at once (``max_concurrency``), an on-disk reply cache
(``JudgeCache``: a rerun costs no request), counters, and failures returned as a failed ``JudgeReply`` with a short
code (``http_429``, ``timeout``, ``connection:ConnectError``, ``malformed_response``), never raised (one bad prompt
cannot sink a batch) and never cached (a rerun tries it again).

Retries are ours, with the SDK's own turned off (``max_retries=0``). Measured against the loopback test server,
the SDK's loop (openai 3.57) waits a fixed 0.5 s doubling up to 8 s whatever we configure, ignores ``Retry-After: 0``
(it waited 0.5 s), and does not retry at all when ``Retry-After`` exceeds 120 s, so a rate-limited row would fail at
once; its attempts are also invisible to the caller. Our loop keeps ``backoff_base``/``backoff_max`` configurable
(tests run with 10 ms waits), honours ``Retry-After`` up to ``backoff_max`` and still retries beyond it, and counts
every attempt, retry and status exactly. It retries what the SDK would (408, 409, 429, 5xx, timeouts, dropped
connections) and nothing else (400 prompt too long, 401, 404: asking again cannot help).

The API key is read, at every request, from the environment variable *named* by ``api_key_env`` and handed to the
SDK, which puts it in the ``Authorization`` header (and redacts that header in its own logs). It is no field of
``JudgeClientConfig`` or ``JudgeClient`` (only the SDK object they hold keeps it in memory), nor part of a log line,
error code, cache entry, ``repr``, counter or output file. Errors are recorded as codes, never as server text,
which could echo a header back. Unset or empty: no ``Authorization`` header at all, and the SDK's fallback to
``OPENAI_API_KEY`` is not used either (that key is not meant for this server).
"""

from __future__ import annotations

import email.utils
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
from typing import NamedTuple, Optional
from urllib.parse import urlsplit

import openai

from rt_lightning.eval.judge.cache import JudgeCache, cache_key

log = logging.getLogger(__name__)

__all__ = ["JudgeClient", "JudgeClientConfig", "JudgeReply"]

Messages = list[dict[str, str]]
RETRYABLE_STATUS = {408, 409, 429} | set(range(500, 600))  # overload, rate limit, server-side trouble


@dataclass(frozen=True)
class JudgeClientConfig:
    """How to reach the judge model and how hard to try."""

    base_url: str = "http://localhost:8000/v1"
    """Server root including the API version, e.g. ``http://localhost:8000/v1`` for ``vllm serve``."""
    model: str = "meta-llama/Llama-3.1-70B-Instruct"
    """Judge model name as the server knows it (vLLM: the served model name; the paper: Llama-3.1-70B-Instruct)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (the key itself never goes in a file or log). Unset
    or empty: no key is sent (a vLLM server started without ``--api-key`` needs none)."""
    max_concurrency: int = 8
    """Requests in flight at once."""
    timeout: float = 300.0
    """Seconds allowed for connecting and for each read from the socket."""
    max_retries: int = 5
    """Retries after the first attempt of a request, on 408/409/429/5xx, timeouts and dropped connections."""
    backoff_base: float = 1.0
    """First retry waits about this long (seconds); each later retry doubles it, scaled by a random factor in
    [0.5, 1.5) so clients do not retry in lockstep, and capped at ``backoff_max``."""
    backoff_max: float = 60.0
    """Cap on one wait (seconds), including a server's ``Retry-After``."""
    max_tokens: int = 2048
    """Judge output budget (the paper's refusal judge: 2048). Part of the judge setup: an output_dir judged with
    another value refuses to continue."""

    def __post_init__(self):
        parts = urlsplit(self.base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"client.base_url must be http(s)://host[:port]/path, got {self.base_url!r}")
        for name in ("max_concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"client.{name} must be at least 1, got {getattr(self, name)}")
        if self.timeout <= 0:
            raise ValueError(f"client.timeout must be positive, got {self.timeout}")
        for name in ("max_retries", "backoff_base", "backoff_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"client.{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class JudgeReply:
    text: Optional[str]
    """The judge's message content; ``None`` when the request failed."""
    error: Optional[str] = None
    """Short failure code (``http_500``, ``timeout``, ...) when ``text`` is ``None``."""
    cached: bool = False


class Attempt(NamedTuple):
    """What one HTTP exchange gave: the reply text, or an error code and whether trying again may help."""

    text: Optional[str]
    error: Optional[str]
    retryable: bool = False
    retry_after: Optional[float] = None
    """The server's ``Retry-After``, in seconds."""


def _retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` is either a number of seconds or an HTTP date; ``None`` when absent or unreadable."""
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


def _message_content(completion: object) -> Optional[str]:
    """``choices[0].message.content``, or ``None`` when the body was no chat completion (the SDK builds models
    leniently: a body without ``choices`` arrives with ``choices=None``, a non-JSON one as a plain string)."""
    try:
        content = completion.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class JudgeClient:
    def __init__(self, config: JudgeClientConfig = JudgeClientConfig(), cache_dir: Optional[str | Path] = None):
        """
        Args:
            config: Server, model and retry settings.
            cache_dir: Folder for the reply cache; ``None`` disables caching.
        """
        self.config = config
        self.cache = JudgeCache(cache_dir) if cache_dir else None
        # A callable, so the key is looked up per request (the SDK keeps the latest one on its own object).
        self._sdk = openai.OpenAI(base_url=config.base_url.rstrip("/"), api_key=self._api_key,
                                  timeout=config.timeout, max_retries=0)
        self._lock = threading.Lock()
        self.requests = 0  # HTTP attempts sent, retries included
        self.cache_hits = 0
        self.retries = 0
        self.failures = 0  # prompts given up on
        self.failure_types: Counter[str] = Counter()
        self.requests_by_status: Counter[str] = Counter()

    def __repr__(self) -> str:  # explicit, so neither the key nor the SDK object can show up here
        return f"JudgeClient({self.config!r}, cache={str(self.cache.path) if self.cache else None!r})"

    @property
    def generation_params(self) -> dict:
        """Everything besides model and messages that shapes a reply: part of the cache key."""
        return {"temperature": 0.0, "max_tokens": self.config.max_tokens}

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

    # --- one request ------------------------------------------------------------------------------------------------
    def _api_key(self) -> str:
        return os.environ.get(self.config.api_key_env, "")

    def _backoff(self, retry: int, retry_after: Optional[float]) -> float:
        delay = min(self.config.backoff_max,
                    self.config.backoff_base * 2 ** (retry - 1) * random.uniform(0.5, 1.5))
        if retry_after is not None:  # the server knows best when it can take us again
            delay = max(delay, min(retry_after, self.config.backoff_max))
        return delay

    def _attempt(self, messages: Messages) -> Attempt:
        """One HTTP exchange, whatever happens to it."""
        self._count("requests")
        # No key: tell the SDK to send no Authorization header rather than refuse to send.
        headers = None if self._api_key() else {"Authorization": openai.Omit()}
        try:
            completion = self._sdk.chat.completions.create(model=self.config.model, messages=messages,
                                                           extra_headers=headers, **self.generation_params)
        except openai.APITimeoutError:  # before APIConnectionError, its base class
            return Attempt(None, "timeout", retryable=True)
        except openai.APIConnectionError as exc:  # refused, reset, closed mid-reply
            return Attempt(None, f"connection:{type(exc.__cause__ or exc).__name__}", retryable=True)
        except openai.APIStatusError as exc:  # 400 (prompt too long), 401, 404 are final: retrying cannot help
            self._count("status", str(exc.status_code))
            return Attempt(None, f"http_{exc.status_code}", retryable=exc.status_code in RETRYABLE_STATUS,
                           retry_after=_retry_after_seconds(exc.response.headers.get("Retry-After")))
        except (json.JSONDecodeError, UnicodeDecodeError):  # a 2xx whose body is no JSON (a proxy's error page)
            self._count("status", "200")
            return Attempt(None, "malformed_response", retryable=False)
        self._count("status", "200")
        text = _message_content(completion)
        # A reply that is no chat completion comes from a proxy or a non-OpenAI server: asking again will not help.
        return Attempt(text, None if text is not None else "malformed_response", retryable=False)

    def _request(self, messages: Messages) -> JudgeReply:
        attempt = self._attempt(messages)
        for retry in range(1, self.config.max_retries + 1):
            if attempt.text is not None or not attempt.retryable:
                break
            delay = self._backoff(retry, attempt.retry_after)
            log.warning("judge request failed (%s); retry %d/%d in %.2f s", attempt.error, retry,
                        self.config.max_retries, delay)
            self._count("retries")
            time.sleep(delay)
            attempt = self._attempt(messages)
        if attempt.text is not None:
            return JudgeReply(attempt.text)
        self._count("failure", attempt.error)
        log.warning("judge request failed for good (%s)", attempt.error)
        return JudgeReply(None, attempt.error)

    # --- batches ----------------------------------------------------------------------------------------------------
    def complete_many_replies(self, message_lists: list[Messages], judge: str = "judge") -> list[JudgeReply]:
        """One ``JudgeReply`` per message list, in input order. Cached prompts cost no request; duplicates in the
        batch are sent once."""
        for messages in message_lists:  # a bare string here would be sent as garbage and fail far from the cause
            if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
                raise TypeError("each request must be a list of {'role': ..., 'content': ...} messages")
        keys = [cache_key(judge, self.config.model, m, self.generation_params) for m in message_lists]
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
                self.cache.put(key, reply.text, judge, self.config.model)  # written at once: a kill loses nothing
            replies[key] = reply

        if todo:
            with ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(todo))) as pool:
                for future in [pool.submit(run, key) for key in todo]:
                    future.result()  # _request catches every network failure; anything else is a bug: raise it
        return [replies[key] for key in keys]

    def complete_many(self, message_lists: list[Messages], judge: str = "judge") -> list[Optional[str]]:
        """Reply texts in input order; ``None`` where a request failed after all retries."""
        return [r.text for r in self.complete_many_replies(message_lists, judge)]

    def complete(self, messages: Messages, judge: str = "judge") -> Optional[str]:
        return self.complete_many([messages], judge)[0]

    def close(self) -> None:
        self._sdk.close()
        if self.cache is not None:
            self.cache.close()

"""The transport of the OpenAI-compatible backend: replicas, retries, fail-over, and the capability probe's
bookkeeping per replica.

Several base URLs serve one model (e.g. a vLLM cluster): requests go round-robin to replicas that are healthy; a
replica that fails (connection error, timeout, 5xx, garbage) is set aside with an exponential cool-down, so one
replica down does not stop a fit. At most `max_concurrency` requests are in flight per replica. Each request has a
hard timeout; 429/5xx/connection errors/timeouts/malformed answers are retried with exponential backoff and jitter
(tenacity), immediately on another replica when one is healthy; 4xx request errors are not retried and become a
one-line DlcLMError (context too long: with the sizes). The API key is held only in the HTTP client, and never
logged, stored, or put into errors or `model_id`. Every replica is probed once (`probe.probe_endpoint`); one that
was down at start is probed when it comes back and used only if it can do what was recorded.
"""
from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Sequence, TypeVar
from urllib.parse import urlsplit

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from dlc import jsonread
from dlc.errors import DlcLMError, add_secret, add_url_secrets, redact
from dlc.lm.base import Capabilities
from dlc.lm.openai_backend.probe import Check, EndpointInfo, MalformedResponse, merge_infos, probe_endpoint
from dlc.rng import derive_seed

T = TypeVar("T")

_CONTEXT_MARKERS = ("context length", "context_length", "maximum context", "context window", "too long",
                    "exceeds the context", "n_ctx", "prompt is too long", "maximum model length")


@dataclass
class _Endpoint:
    """One replica: its client, its in-flight bound and its health."""

    url: str
    client: openai.AsyncOpenAI
    sem: asyncio.Semaphore
    failures: int = 0
    down_until: float = 0.0
    info: EndpointInfo | None = None
    excluded: str | None = None             # why this replica is not used (lower capabilities than recorded)
    probing: bool = False                   # a late probe is running (one at a time, not one per request)
    requests: int = 0

    @property
    def root(self) -> str:
        """The server root (base URL without a trailing /v1), for non-OpenAI routes like /apply-template."""
        u = self.url.rstrip("/")
        return u[:-3] if u.endswith("/v1") else u

    def healthy(self, now: float) -> bool:
        return self.excluded is None and self.down_until <= now

    def fail(self, cool: float | None = None) -> None:
        self.failures += 1
        self.down_until = time.monotonic() + (cool if cool is not None else min(30.0, 0.25 * 2 ** self.failures))

    def ok(self) -> None:
        self.failures = 0
        self.down_until = 0.0


def _server_message(e: openai.APIStatusError) -> str:
    """The server's own error text (OpenAI-shaped `{"error": {"message"}}` or FastAPI `{"detail"}`), one line."""
    body = e.body
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg is None and "detail" in body:
            msg = body["detail"]
    if msg is None:
        try:
            msg = e.response.text
        except Exception:  # a streamed/closed body
            msg = str(e)
    return redact(" ".join(str(msg).split()))[:500]   # redacted before the cut: a cut key would not match


def _retry_after(e: openai.APIStatusError) -> float | None:
    try:
        v = e.response.headers.get("retry-after")
        return float(v) if v is not None else None
    except (ValueError, AttributeError):
        return None


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def shown_url(url: str) -> str:
    """`url` as a message may show it: everything between `://` and the last `@` masked. A malformed URL is where
    the user information may not parse (a password with an unencoded `/`, `?` or `#`), so it cannot be registered
    as a secret: it is cut out by position instead."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a base URL, or None. Asked before any connection: a port that is not a number or over
    65535, or a broken IPv6 bracket, otherwise surfaces deep in the HTTP client as an OverflowError or InvalidURL."""
    try:
        parts = urlsplit(url)
        parts.port                  # raises ValueError for 'abc' or 99999
    except ValueError as e:         # Python's words only: its own text quotes the port, maybe a cut password
        why = ("its port is not a number" if "cast to integer" in str(e) else
               "its port is over 65535" if "out of range" in str(e) else
               "a bracketed IPv6 address is not closed" if "IPv6" in str(e) else "it does not parse")
        return f"is not a valid URL: {why}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL"
    if any(c.isspace() for c in url):
        return "contains white space"
    return None


class Transport:
    """One model served at one or more OpenAI-compatible base URLs (replicas): an asyncio event loop in a private
    thread, the replicas' clients and health, and `_send` (one HTTP request with this backend's retry policy).
    `max_retries` bounds the retries of one request (not counting the first attempt). `probe=False` skips the
    capability probe and assumes `Capabilities()` (every capability present)."""

    def __init__(self, model: str, base_urls: Sequence[str], api_key: str | None = None, *,
                 max_concurrency: int = 8, timeout: float = 120.0, max_retries: int = 6,
                 backoff_base: float = 0.5, backoff_max: float = 20.0, probe: bool = True) -> None:
        urls = [u.strip().rstrip("/") for u in base_urls if u and u.strip()]
        for u in urls:              # before any message can mention them
            add_url_secrets(u)
        add_secret(api_key)
        if not urls:
            raise DlcLMError(f"no base URL given for model '{model}'", code="E620",
                             hint="set the environment variable named by base_url_env, e.g. "
                                  "OPENAI_BASE_URL=http://127.0.0.1:8000/v1 (several URLs: comma-separated)")
        for u in urls:
            problem = url_problem(u)
            if problem is not None:
                raise DlcLMError(f"base URL '{shown_url(u)}' {problem}", code="E620",
                                 hint="write it like http://127.0.0.1:8000/v1")
        if max_concurrency < 1 or timeout <= 0 or max_retries < 0:
            raise DlcLMError("max_concurrency must be >= 1, timeout > 0 and max_retries >= 0", code="E620")
        self.model = model
        self.base_urls = tuple(urls)
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._api_key = api_key or "no-key"   # local servers ignore it; the openai client requires a value
        # Backoff jitter only spreads retries in time (results never depend on it); it still comes from dlc.rng.
        self._jitter = random.Random(derive_seed(0, "openai-backoff", os.getpid(), *urls))
        self._rr = 0
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"dlc-openai-{model}", daemon=True)
        self._thread.start()
        self._endpoints: list[_Endpoint] = self._run(self._make_endpoints())
        self.info: EndpointInfo | None = None
        self.capabilities = Capabilities()
        if probe:
            self.info = self._run(self._probe_all())
            self.capabilities = self.info.capabilities()

    # ------------------------------------------------------------------ plumbing
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            raise RuntimeError("OpenAILM is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _make_endpoints(self) -> list[_Endpoint]:
        # The openai client's own retries are off: retries, backoff and fail-over are this class's (per replica).
        return [_Endpoint(url=url, client=openai.AsyncOpenAI(api_key=self._api_key, base_url=url, max_retries=0,
                                                             timeout=self.timeout),
                          sem=asyncio.Semaphore(self.max_concurrency)) for url in self.base_urls]

    def close(self) -> None:
        if self._closed:
            return

        async def _close() -> None:
            for ep in self._endpoints:
                await ep.client.close()

        try:
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=10)
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def endpoint_report(self) -> list[dict[str, Any]]:
        """Per replica: probe results, requests sent, health (for the run directory; no secrets)."""
        return [{"base_url": redact(ep.url), "requests": ep.requests, "failures": ep.failures, "excluded": ep.excluded,
                 "info": ep.info.to_json() if ep.info else None} for ep in self._endpoints]

    # ------------------------------------------------------------------ transport with retries
    def _pick(self) -> _Endpoint:
        """Round-robin over healthy replicas; when none is healthy, the one that recovers first."""
        now = time.monotonic()
        n = len(self._endpoints)
        for k in range(n):
            ep = self._endpoints[(self._rr + k) % n]
            if ep.healthy(now):
                self._rr = (self._rr + k + 1) % n
                return ep
        usable = [ep for ep in self._endpoints if ep.excluded is None] or self._endpoints
        return min(usable, key=lambda e: e.down_until)

    def _wait(self, state: RetryCallState, pinned: bool = False) -> float:
        """Exponential backoff with jitter; 0 when another replica is healthy (fail over at once)."""
        exc = state.outcome.exception() if state.outcome else None
        now = time.monotonic()
        if not pinned and len(self._endpoints) > 1 and any(ep.healthy(now) for ep in self._endpoints):
            return 0.0
        cap = min(self.backoff_max, self.backoff_base * 2 ** (state.attempt_number - 1))
        wait = cap / 2 + self._jitter.uniform(0, cap / 2)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)):
            wait = max(wait, min(float(retry_after), self.backoff_max))
        return wait

    def _convert(self, e: BaseException, ep: _Endpoint, ctx: dict[str, Any]) -> DlcLMError:
        """Map a transport/protocol failure to a DlcLMError, and record the replica's health."""
        where = f"{self.model} at {redact(ep.url)}"
        if isinstance(e, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
            ep.fail()
            return DlcLMError(f"request to {where} timed out after {self.timeout:g} s", code="E621",
                              retryable=True, hint="the server is overloaded or the request is very long: raise "
                                                   "the model's timeout or lower max_concurrency")
        if isinstance(e, openai.APIConnectionError):
            ep.fail()
            cause = e.__cause__ or e
            return DlcLMError(f"cannot reach {where}: {type(cause).__name__}: "
                              f"{redact(' '.join(str(cause).split()))[:200]}",
                              code="E621", retryable=True,
                              hint="is the server running? (dlc serve --model MODEL prints its URL)")
        if isinstance(e, MalformedResponse):
            ep.fail()
            return DlcLMError(f"malformed response from {where}: {e}", code="E627", retryable=True,
                              hint="the server does not follow the OpenAI API for this request")
        if isinstance(e, openai.APIStatusError):
            status, msg = e.status_code, _server_message(e)
            if status == 429:
                ra = _retry_after(e)
                ep.fail(cool=ra if ra is not None else None)
                err = DlcLMError(f"{where} is rate limiting (HTTP 429): {msg}", code="E622", retryable=True,
                                 hint="lower max_concurrency or add replicas")
                err.retry_after = ra  # type: ignore[attr-defined]
                return err
            if status >= 500 or status in (408, 409):
                ep.fail()
                return DlcLMError(f"server error from {where} (HTTP {status}): {msg}", code="E622",
                                  retryable=True, hint="check the server's log")
            if status in (401, 403):
                return DlcLMError(f"{where} rejected the credentials (HTTP {status}): {msg}", code="E624",
                                  hint="set the API key in the environment variable named by api_key_env")
            low = msg.lower()
            if status in (400, 413, 422) and any(m in low for m in _CONTEXT_MARKERS):
                sizes = f"prompt of {ctx.get('prompt_chars', '?')} characters, max_tokens {ctx.get('max_tokens', '?')}"
                if self.info and self.info.max_model_len:
                    sizes += f", server context {self.info.max_model_len} tokens"
                return DlcLMError(f"context too long for {where} ({sizes}): {msg}", code="E623",
                                  hint="shorten the inputs or the prompt, lower max_tokens, or serve the model with "
                                       "a larger context (n_ctx / --max-model-len)")
            if status == 404:
                return DlcLMError(f"{where}: not found (HTTP 404): {msg}", code="E625",
                                  hint="check the model name and that the base URL ends with /v1")
            return DlcLMError(f"{where} rejected the request (HTTP {status}): {msg}", code="E626")
        raise e  # anything else is a bug in dlc

    async def _call(self, op: Callable[[_Endpoint], Awaitable[T]], *, ep: _Endpoint | None = None,
                    ctx: dict[str, Any] | None = None, retries: int | None = None) -> T:
        """Run `op` on a replica (round-robin, or pinned to `ep`) with the retry policy of this backend."""
        ctx = ctx or {}
        retries = self.max_retries if retries is None else retries
        retrying = AsyncRetrying(stop=stop_after_attempt(retries + 1), reraise=True,
                                 wait=lambda s: self._wait(s, pinned=ep is not None),
                                 retry=retry_if_exception(lambda x: isinstance(x, DlcLMError) and x.retryable))
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    target = ep or self._pick()
                    if (ep is None and target.info is None and target.excluded is None and not target.probing
                            and self.info is not None):
                        target.probing = True
                        try:
                            await self._late_probe(target)
                        finally:
                            target.probing = False
                        if target.excluded is not None:
                            raise DlcLMError(f"replica {target.url} excluded", code="E621", retryable=True)
                    async with target.sem:
                        target.requests += 1
                        try:
                            async with asyncio.timeout(self.timeout):
                                result = await op(target)
                        except (openai.APIError, MalformedResponse, TimeoutError) as e:
                            raise self._convert(e, target, ctx) from e
                    target.ok()
                    return result
        except DlcLMError as e:
            if e.retryable and attempts > 1:
                e.message = f"{e.message} (gave up after {attempts} attempts)"
                e.args = (e.message,)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, target: _Endpoint, path: str, body: dict[str, Any] | None, check: Check | None,
                    method: str = "POST") -> Any:
        """One HTTP request through the openai client; returns checked JSON or raises MalformedResponse."""
        url = target.root + path if path.startswith("/") else path
        # cast_to=str: the raw body (stable across openai 1.x-3.x); 4xx/5xx still raise APIStatusError
        if method == "GET":
            text = await target.client.get(url, cast_to=str)
        else:
            text = await target.client.post(url, cast_to=str, body=body)
        try:
            data = jsonread.loads(text)
        except jsonread.BadJSON as e:
            raise MalformedResponse(f"invalid JSON ({e.msg}): {redact(text)[:60]!r}") from None
        if isinstance(data, dict) and "error" in data and "choices" not in data and "data" not in data:
            raise MalformedResponse(f"an error body with a success status: {redact(str(data['error']))[:200]}")
        if check is not None:
            check(data)
        return data

    async def _send(self, path: str, body: dict[str, Any] | None, check: Check | None,
                    parse: Callable[[Any], T] | None = None, *, ep: _Endpoint | None = None,
                    ctx: dict[str, Any] | None = None, method: str = "POST", retries: int | None = None) -> T:
        """POST (or GET) with retries; `parse(data)` may raise MalformedResponse, which is retried too."""

        async def op(target: _Endpoint) -> T:
            data = await self._post(target, path, body, check, method)
            return parse(data) if parse else data

        return await self._call(op, ep=ep, ctx=ctx, retries=retries)

    # ------------------------------------------------------------------ probe
    async def _probe_one(self, ep: _Endpoint, quick: bool) -> EndpointInfo:
        """Probe one replica, pinned to it; `quick`: few retries (a replica that is down is set aside)."""
        retries = min(self.max_retries, 2) if quick else self.max_retries

        async def send(method: str, path: str, body: dict[str, Any] | None, check: Check | None) -> Any:
            return await self._send(path, body, check, ep=ep, method=method, retries=retries)

        return await probe_endpoint(send, redact(ep.url), self.model)   # the URL it records has no credentials

    async def _probe_all(self) -> EndpointInfo:
        """Probe every replica once; unreachable ones are set aside (probed when they come back)."""
        errors: list[DlcLMError] = []
        for ep in self._endpoints:
            try:
                ep.info = await self._probe_one(ep, quick=len(self._endpoints) > 1)
            except DlcLMError as e:
                if not e.retryable:
                    raise
                errors.append(e)
        infos = [ep.info for ep in self._endpoints if ep.info is not None]
        if not infos:
            raise DlcLMError(f"cannot reach any server for model '{self.model}': {errors[0].message}", code="E621",
                             hint="start the server (e.g. dlc serve --model tiny --port 8000) or fix the base URL")
        return merge_infos(infos)

    async def _late_probe(self, ep: _Endpoint) -> None:
        """A replica that was down at start: probe it now; use it only if it can do what was recorded."""
        try:
            ep.info = await self._probe_one(ep, quick=True)
        except DlcLMError as e:
            if not e.retryable:
                ep.excluded = e.message
            return
        rec, got = self.capabilities, ep.info.capabilities()
        lacking = [k for k in ("prompt_logprobs", "n_per_request", "batch_prompts", "chat", "seed")
                   if getattr(rec, k) and not getattr(got, k)]
        if got.top_logprobs < rec.top_logprobs:
            lacking.append("top_logprobs")
        if self.info and self.info.render and ep.info.render != self.info.render:
            lacking.append("render")
        if lacking:
            ep.excluded = f"lacks {', '.join(lacking)}"
            print(redact(f"dlc: warning: replica {ep.url} of {self.model} {ep.excluded}; not used"), file=sys.stderr)

"""An OpenAI-compatible backend (`openai` client): OpenAI, Azure's v1 API, vLLM, llama.cpp servers, `dlc serve`.

Scoring (log p(continuation | prompt), paper Eq. 2-3) follows the vLLM contract: one `/v1/completions` request with
`prompt = context + continuation, echo=True, logprobs=1, max_tokens=1` (never 0: vLLM and llama.cpp treat 0
differently), and the continuation's tokens are found by their `text_offset`s: every prompt token whose text ends
after the context belongs to the continuation. A token that straddles the boundary (a BPE merge across it) is
counted as a continuation token, so no continuation character goes unscored.

Chat prompts are generated with `/v1/chat/completions`; when they need an assistant prefix, or are scored, the
client needs the exact rendered text, which it asks the server for (`POST /apply-template`, llama.cpp server and
`dlc serve`). Endpoints are probed once (`dlc.lm.probe`); what an algorithm needs and an endpoint lacks is a clear
`DlcLMError` naming it (E628), never a silent approximation. The documented fallback for label scoring without
prompt log-probs is `first_token_top_logprobs` (first-token top-k, dln-reference §3.2) or accuracy scoring.

Scale-out: several base URLs serve one model (e.g. a vLLM cluster): requests go round-robin to replicas that are
healthy; a replica that fails (connection error, timeout, 5xx, garbage) is set aside with an exponential cool-down,
so one replica down does not stop a fit. At most `max_concurrency` requests are in flight per replica. Each request
has a hard timeout; 429/5xx/connection errors/timeouts/malformed answers are retried with exponential backoff and
jitter (tenacity), immediately on another replica when one is healthy; 4xx request errors are not retried and become
a one-line DlcLMError (context too long: with the sizes). The API key is read from the environment by the caller
(`dlc.lm.registry`), held only in the HTTP client, and never logged, stored, or put into errors or `model_id`.

Error codes: E620 configuration, E621 unreachable/timeout, E622 server error or rate limit after retries,
E623 context too long, E624 authentication, E625 model/endpoint not found, E626 request rejected,
E627 malformed response after retries, E628 capability missing.
"""
from __future__ import annotations

import asyncio
import json
import math
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

from dlc.errors import DlcLMError
from dlc.lm.base import (Capabilities, ChatPrompt, GenerateRequest, GenerateResult, Prompt, ScoreRequest,
                         ScoreResult, Usage)
from dlc.lm.probe import Check, EndpointInfo, MalformedResponse, check_choices, merge_infos, probe_endpoint
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
    return " ".join(str(msg).split())[:500]


def _retry_after(e: openai.APIStatusError) -> float | None:
    try:
        v = e.response.headers.get("retry-after")
        return float(v) if v is not None else None
    except (ValueError, AttributeError):
        return None


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


class OpenAILM:
    """`dlc.lm.base.LM` over one model served at one or more OpenAI-compatible base URLs (replicas).

    Synchronous batch API over an asyncio event loop in a private thread: a batch of N requests is sent with at most
    `max_concurrency` in flight per replica. `max_retries` bounds the retries of one request (not counting the first
    attempt). `probe=False` skips the capability probe and assumes `Capabilities()` (every capability present)."""

    def __init__(self, model: str, base_urls: Sequence[str], api_key: str | None = None, *,
                 max_concurrency: int = 8, timeout: float = 120.0, max_retries: int = 6,
                 backoff_base: float = 0.5, backoff_max: float = 20.0, score_batch: int = 8,
                 probe: bool = True) -> None:
        urls = [u.strip().rstrip("/") for u in base_urls if u and u.strip()]
        if not urls:
            raise DlcLMError(f"no base URL given for model '{model}'", code="E620",
                             hint="set the environment variable named by base_url_env, e.g. "
                                  "OPENAI_BASE_URL=http://127.0.0.1:8000/v1 (several URLs: comma-separated)")
        for u in urls:
            if urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).netloc:
                raise DlcLMError(f"base URL '{u}' is not an http(s) URL", code="E620",
                                 hint="write it like http://127.0.0.1:8000/v1")
        if max_concurrency < 1 or timeout <= 0 or max_retries < 0:
            raise DlcLMError("max_concurrency must be >= 1, timeout > 0 and max_retries >= 0", code="E620")
        self.model = model
        self.base_urls = tuple(urls)
        self.model_id = f"openai:{model}"
        self.usage = Usage()
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.score_batch = max(1, score_batch)
        self._api_key = api_key or "no-key"   # local servers ignore it; the openai client requires a value
        # Backoff jitter only spreads retries in time (results never depend on it); it still comes from dlc.rng.
        self._jitter = random.Random(derive_seed(0, "openai-backoff", os.getpid(), *urls))
        self._rr = 0
        self._render_cache: dict[tuple[str | None, str], str] = {}
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

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAILM(model={self.model!r}, base_urls={list(self.base_urls)!r})"

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

    def __enter__(self) -> "OpenAILM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def endpoint_report(self) -> list[dict[str, Any]]:
        """Per replica: probe results, requests sent, health (for the run directory; no secrets)."""
        return [{"base_url": ep.url, "requests": ep.requests, "failures": ep.failures, "excluded": ep.excluded,
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
        where = f"{self.model} at {ep.url}"
        if isinstance(e, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
            ep.fail()
            return DlcLMError(f"request to {where} timed out after {self.timeout:g} s", code="E621",
                              retryable=True, hint="the server is overloaded or the request is very long: raise "
                                                   "the model's timeout or lower max_concurrency")
        if isinstance(e, openai.APIConnectionError):
            ep.fail()
            cause = e.__cause__ or e
            return DlcLMError(f"cannot reach {where}: {type(cause).__name__}: {' '.join(str(cause).split())[:200]}",
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
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise MalformedResponse(f"invalid JSON ({e.msg}): {text[:60]!r}") from None
        if isinstance(data, dict) and "error" in data and "choices" not in data and "data" not in data:
            raise MalformedResponse(f"an error body with a success status: {str(data['error'])[:200]}")
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

        return await probe_endpoint(send, ep.url, self.model)

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
            print(f"dlc: warning: replica {ep.url} of {self.model} {ep.excluded}; not used", file=sys.stderr)

    # ------------------------------------------------------------------ chat rendering
    def _needs(self, what: str, purpose: str, hint: str) -> DlcLMError:
        return DlcLMError(f"{self.model} at {', '.join(self.base_urls)} does not provide {what}, which {purpose} "
                          "needs", code="E628", hint=hint)

    async def _render(self, prompt: ChatPrompt, purpose: str) -> str:
        """The chat template applied by the server (generation prompt included), plus the assistant prefix."""
        if self.info is not None and self.info.render is None:
            raise self._needs("a chat-template renderer (POST /apply-template)", purpose,
                              "use format = raw for this layer, or serve the model with `dlc serve` or llama.cpp's "
                              "llama-server, which render chat templates")
        key = (prompt.system, prompt.user)
        if key not in self._render_cache:
            messages = _messages(prompt)

            def parse(data: Any) -> str:
                if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
                    raise MalformedResponse("/apply-template response has no 'prompt' string")
                return data["prompt"]

            self._render_cache[key] = await self._send("/apply-template", {"messages": messages}, None, parse)
        return self._render_cache[key] + prompt.prefix

    # ------------------------------------------------------------------ generate
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if not requests:
            return []
        return self._run(self._agenerate(list(requests)))

    async def _agenerate(self, reqs: list[GenerateRequest]) -> list[GenerateResult]:
        return list(await asyncio.gather(*(self._generate_one(r) for r in reqs)))

    async def _generate_one(self, req: GenerateRequest) -> GenerateResult:
        if req.max_tokens < 1:
            raise DlcLMError(f"max_tokens must be >= 1 (got {req.max_tokens})", code="E626",
                             hint="servers treat 0 or negative as 'fill the context'; dlc never sends it")
        if req.n < 1:
            raise DlcLMError(f"n must be >= 1 (got {req.n})", code="E626")
        caps = self.capabilities
        greedy = req.temperature == 0.0
        n_send = 1 if greedy else req.n            # greedy samples are identical: ask once
        if n_send > 1 and not caps.n_per_request:
            parts = await asyncio.gather(*(self._generate_call(req, 1, derive_seed(req.seed, i) % (2**31 - 1))
                                           for i in range(n_send)))
            texts = tuple(t for p in parts for t in p.texts)
            reasons = tuple(r for p in parts for r in p.finish_reasons)
            res = GenerateResult(texts=texts, prompt_tokens=parts[0].prompt_tokens,
                                 completion_tokens=sum(p.completion_tokens for p in parts), finish_reasons=reasons)
        else:
            res = await self._generate_call(req, n_send, req.seed)
        if len(res.texts) < req.n:
            res = GenerateResult(texts=res.texts * req.n, prompt_tokens=res.prompt_tokens,
                                 completion_tokens=res.completion_tokens * req.n,
                                 finish_reasons=res.finish_reasons * req.n)
        self.usage.add(req.tag, calls=1, prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens)
        return res

    async def _generate_call(self, req: GenerateRequest, n: int, seed: int) -> GenerateResult:
        info = self.info
        params: dict[str, Any] = {"model": self.model, "max_tokens": req.max_tokens,
                                  "temperature": req.temperature, "top_p": req.top_p}
        if n > 1:
            params["n"] = n
        if self.capabilities.seed:
            params["seed"] = seed
        if req.stop:
            params["stop"] = list(req.stop)
        prompt = req.prompt
        use_chat = isinstance(prompt, ChatPrompt) and not prompt.prefix and (
            info is None or info.chat_completions or not info.completions)
        if isinstance(prompt, ChatPrompt) and not use_chat:
            if info is not None and not info.completions:
                raise self._needs("/v1/completions with a rendered chat template", "a chat prompt with an "
                                  f"assistant prefix ({prompt.prefix!r})",
                                  "set answer_prefix = \"\" for this layer, or use a server with completions")
            text = await self._render(prompt, "generating after an assistant prefix")
        elif isinstance(prompt, str):
            if info is not None and not info.completions:
                raise self._needs("/v1/completions", "a raw-format prompt",
                                  "use format = chat for layers on this model")
            text = prompt
        ctx = {"prompt_chars": len(text if not use_chat else prompt.user), "max_tokens": req.max_tokens}
        if use_chat:
            assert isinstance(prompt, ChatPrompt)
            body = {**params, "messages": _messages(prompt)}
            return await self._send("chat/completions", body, check_choices(n), _parse_chat, ctx=ctx)
        body = {**params, "prompt": text}
        return await self._send("completions", body, check_choices(n), _parse_completion, ctx=ctx)

    # ------------------------------------------------------------------ score
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if not requests:
            return []
        return self._run(self._ascore(list(requests)))

    async def _context_text(self, prompt: Prompt) -> str:
        if isinstance(prompt, ChatPrompt):
            return await self._render(prompt, "scoring a chat prompt exactly")
        return prompt

    async def _ascore(self, reqs: list[ScoreRequest]) -> list[ScoreResult]:
        if not self.capabilities.prompt_logprobs:
            raise self._needs("prompt log-probabilities (/v1/completions with echo + logprobs)",
                              "exact scoring (log p(y | .) of labels, log p(h | .) of hidden texts in DLN-2)",
                              "serve the model with vLLM or `dlc serve`; for a DLN-1 fit, set output_scoring = "
                              "accuracy (labels can also use first-token top-k via first_token_top_logprobs)")
        contexts = await asyncio.gather(*(self._context_text(r.prompt) for r in reqs))
        results: list[ScoreResult | None] = [None] * len(reqs)
        todo = []
        for i, (r, c) in enumerate(zip(reqs, contexts)):
            if r.continuation == "":
                results[i] = ScoreResult(logprobs=())
            else:
                todo.append((i, c, r.continuation))
        size = self.score_batch if self.capabilities.batch_prompts else 1
        chunks = [todo[k:k + size] for k in range(0, len(todo), size)]
        for chunk, out in zip(chunks, await asyncio.gather(*(self._score_chunk(ch) for ch in chunks))):
            for (i, _, _), res in zip(chunk, out):
                results[i] = res
                self.usage.add(reqs[i].tag, calls=1, prompt_tokens=res.prompt_tokens + res.n_tokens)
        return [r for r in results if r is not None]

    async def _score_chunk(self, chunk: list[tuple[int, str, str]]) -> list[ScoreResult]:
        texts = [c + cont for _, c, cont in chunk]
        body = {"model": self.model, "prompt": texts if len(texts) > 1 else texts[0], "max_tokens": 1,
                "echo": True, "logprobs": 1, "temperature": 0.0}

        def parse(data: Any) -> list[ScoreResult]:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
            return [align_continuation(t, len(c), ch) for (_, c, _), t, ch in zip(chunk, texts, choices)]

        ctx = {"prompt_chars": max(len(t) for t in texts), "max_tokens": 1}
        return await self._send("completions", body, check_choices(len(texts)), parse, ctx=ctx)

    # ------------------------------------------------------------------ documented fallback
    def first_token_top_logprobs(self, prompts: Sequence[Prompt], k: int = 5) -> list[dict[str, float]]:
        """The top-k log-probs of the first generated token after each prompt (greedy, max_tokens=1).

        The documented fallback for label scoring on endpoints without prompt log-probs (dln-reference §3.2):
        labels whose first token is missing from the top-k get no exact value, so this is an approximation the
        caller must choose explicitly; `score` never falls back to it."""
        if self.capabilities.top_logprobs < 1:
            raise self._needs("top log-probabilities of generated tokens", "first-token label scoring",
                              "set output_scoring = accuracy")
        k = max(1, min(k, self.capabilities.top_logprobs))
        return self._run(self._atop(list(prompts), k))

    async def _atop(self, prompts: list[Prompt], k: int) -> list[dict[str, float]]:
        async def one(p: Prompt) -> dict[str, float]:
            base = {"model": self.model, "max_tokens": 1, "temperature": 0.0}
            use_chat = isinstance(p, ChatPrompt) and (self.info is None or not self.info.completions)
            if use_chat:
                assert isinstance(p, ChatPrompt)
                if p.prefix:
                    raise self._needs("/v1/completions", "an assistant prefix", "set answer_prefix = \"\"")
                body = {**base, "messages": _messages(p), "logprobs": True, "top_logprobs": k}
                return await self._send("chat/completions", body, check_choices(1), _parse_chat_top)
            text = await self._context_text(p)
            body = {**base, "prompt": text, "logprobs": k}
            return await self._send("completions", body, check_choices(1), _parse_completion_top)

        return list(await asyncio.gather(*(one(p) for p in prompts)))


# ---------------------------------------------------------------------- parsing (pure; raise MalformedResponse)
def _messages(prompt: ChatPrompt) -> list[dict[str, str]]:
    msgs = []
    if prompt.system is not None:
        msgs.append({"role": "system", "content": prompt.system})
    msgs.append({"role": "user", "content": prompt.user})
    return msgs


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    u = data.get("usage")
    if not isinstance(u, dict):
        return 0, 0
    p, c = u.get("prompt_tokens", 0), u.get("completion_tokens", 0)
    return (p if isinstance(p, int) else 0), (c if isinstance(c, int) else 0)


def _sorted_choices(data: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)


def _parse_completion(data: dict[str, Any]) -> GenerateResult:
    texts, reasons = [], []
    for c in _sorted_choices(data):
        if not isinstance(c.get("text"), str):
            raise MalformedResponse("a completion choice has no 'text' string")
        texts.append(c["text"])
        reasons.append(str(c.get("finish_reason") or ""))
    p, k = _usage(data)
    return GenerateResult(texts=tuple(texts), prompt_tokens=p, completion_tokens=k, finish_reasons=tuple(reasons))


def _parse_chat(data: dict[str, Any]) -> GenerateResult:
    texts, reasons = [], []
    for c in _sorted_choices(data):
        msg = c.get("message")
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise MalformedResponse("a chat choice has no 'message.content' string")
        texts.append(msg["content"])
        reasons.append(str(c.get("finish_reason") or ""))
    p, k = _usage(data)
    return GenerateResult(texts=tuple(texts), prompt_tokens=p, completion_tokens=k, finish_reasons=tuple(reasons))


def _parse_completion_top(data: dict[str, Any]) -> dict[str, float]:
    lp = data["choices"][0].get("logprobs")
    tl = lp.get("top_logprobs") if isinstance(lp, dict) else None
    if not isinstance(tl, list) or not tl or not isinstance(tl[0], dict):
        raise MalformedResponse("no 'logprobs.top_logprobs' in the completion")
    return {str(t): float(v) for t, v in tl[0].items()}


def _parse_chat_top(data: dict[str, Any]) -> dict[str, float]:
    lp = data["choices"][0].get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise MalformedResponse("no 'logprobs.content' in the chat completion")
    return {str(t["token"]): float(t["logprob"]) for t in content[0].get("top_logprobs") or []}


def align_continuation(text: str, ctx_len: int, choice: dict[str, Any]) -> ScoreResult:
    """The continuation's tokens of an echo choice for `text` (= context + continuation, context of `ctx_len`
    characters), found by text offsets (vLLM contract).

    Prompt tokens are those starting before the end of `text` (the generated token starts at its end). When the
    token texts concatenate exactly to `text`, offsets are recomputed from their lengths (some servers report byte
    offsets). The continuation starts at the first token whose text ends after `ctx_len`."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        raise MalformedResponse("echo choice has no 'logprobs' object")
    toks, lps, offs = lp.get("tokens"), lp.get("token_logprobs"), lp.get("text_offset")
    if not (isinstance(toks, list) and isinstance(lps, list) and isinstance(offs, list)):
        raise MalformedResponse("echo logprobs lack tokens / token_logprobs / text_offset lists")
    if not len(toks) == len(lps) == len(offs):
        raise MalformedResponse("echo logprobs lists have different lengths")
    out = choice.get("text")
    if not isinstance(out, str) or not out.startswith(text):
        raise MalformedResponse("the echoed text does not start with the prompt (echo ignored?)")
    if not all(isinstance(o, int) for o in offs) or any(b < a for a, b in zip(offs, offs[1:])):
        raise MalformedResponse("text_offset is not a non-decreasing list of integers")
    n = sum(1 for o in offs if o < len(text))
    if n == 0:
        raise MalformedResponse("no echoed prompt tokens")
    if all(isinstance(t, str) for t in toks[:n]) and "".join(toks[:n]) == text:
        offs = [0] * n
        pos = 0
        for i in range(n):
            offs[i] = pos
            pos += len(toks[i])
    ends = [offs[i + 1] if i + 1 < n else len(text) for i in range(n)]
    first = next((i for i in range(n) if ends[i] > ctx_len), None)
    if first is None:
        raise MalformedResponse("no echoed token covers the continuation")
    values: list[float] = []
    for i in range(first, n):
        v = lps[i]
        if v is None:
            if i == 0:
                raise DlcLMError("cannot score a continuation that starts the text: the first token of an echo has "
                                 "no log-prob", code="E626", hint="score a continuation after a non-empty context")
            raise MalformedResponse(f"echoed token {i} has no log-prob")
        if not isinstance(v, (int, float)) or math.isnan(v) or v > 1e-6:
            raise MalformedResponse(f"echoed token {i} has an invalid log-prob {v!r}")
        values.append(float(min(v, 0.0)) if v != -math.inf else -math.inf)
    tokens = tuple(str(t) for t in toks[first:n])
    return ScoreResult(logprobs=tuple(values), tokens=tokens, prompt_tokens=first)


__all__ = ["OpenAILM", "align_continuation"]

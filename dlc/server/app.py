"""`dlc serve`: an OpenAI-compatible HTTP server (FastAPI) over the embedded backend.

One process holds the model for many fits, and it is the real server the OpenAI path is tested against. Routes:

- `GET  /v1/models`            the one served model (`max_model_len` = its context size);
- `POST /v1/completions`       prompt string or list, n, temperature, top_p, seed, stop, max_tokens, echo, logprobs
                               (0..max_logprobs, `dlc serve --max-logprobs`, default 100). `tokens / token_logprobs /
                               text_offset / top_logprobs` as vLLM returns them: each position lists the k most
                               likely tokens with their log-probs, plus the token there when it is not among them.
                               With `echo` the prompt tokens carry exact teacher-forced log-probs (first token null),
                               computed with prefix sharing: sequence 0 keeps the last prompt and its rows, so
                               consecutive prompts (and the prompts of a list, visited in token order) decode only
                               what differs; generated tokens are reported as sampled (their own ids, log-probs read
                               from the logits they were sampled from), also the end-of-generation token.
                               Tokens are spelled as text (" word"), or with `dlc serve --logprob-tokens vocab` as
                               the vocabulary's strings ("Ġword", what vLLM before 0.4 returned); text_offset and
                               the values are the same either way;
- `POST /v1/chat/completions`  one user message, an optional system message first and an optional final assistant
                               message (the start of the reply: generation continues after it); `logprobs` and
                               `top_logprobs` (up to max_logprobs) as OpenAI returns them;
- `POST /apply-template`       `{"messages": [...]}` -> `{"prompt": rendered}` (llama.cpp server's route): the exact
                               text the chat template produces, so a client can score chat prompts;
- `GET  /health`.

The model is not thread-safe: requests are served one at a time under a lock. The routes that run the model
(completions, chat, apply-template) are async: their work runs in a worker thread while the handler waits for the client's
`http.disconnect`; a client that goes away sets the request's cancel event, the embedded model stops before its next
llama_decode (`EmbeddedModel.cancelled_by`, `dlc.lm.base.Cancelled`), frees the request's KV sequences and the
lock, and the next request starts at once; a request whose client left while it waited for the lock never starts.
A client that stays gets exactly what it got before. Log-probs are model log-probs (temperature 1), as vLLM and
OpenAI report them. A stand-in model without `echo_logprobs` / `generate_logprobs` (tests) gets the old path:
teacher forcing of prompt + completion and only the chosen token in `top_logprobs`. Errors are OpenAI-shaped JSON
(`{"error": {"message", "type", "param", "code"}}`): 400 for bad requests (context too long: with the sizes; JSON
types are checked strictly; OpenAI parameters dlc does not implement, such as logit_bias, are refused when set), 404
for an unknown model, 408 for a body that stops arriving (30 s), 413 for a body over 16 MiB, 500 (`server_error`) for
the server's own failures (llama_decode failed, a bug), which clients retry or fail over. At most 1024 choices
(prompts x n) per request. Requests wait for the model on an asyncio lock, so /health and /v1/models answer at once
however many requests are queued.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, Sequence, TypeVar, Union

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dlc.errors import DlcError
from dlc.lm.base import Cancelled, ChatPrompt, GenerateRequest, GenerateResult, ModelText, Prompt
from dlc.server.requests import (MAX_CHOICES, ApiError, ChatBody, CompletionBody, TemplateBody, _Common,
                                 chat_prompt)

if TYPE_CHECKING:
    from dlc.lm.embedded.model import TokenLogprob

EchoToken = tuple[str, int, Union[float, None]]
T = TypeVar("T")


class Servable(Protocol):
    """What the server needs from a model (EmbeddedLM provides it)."""

    model_id: str

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]: ...

    def echo(self, text: str) -> list[EchoToken]: ...

    def render(self, prompt: ChatPrompt) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...


MAX_LOGPROBS = 100   # the default of `dlc serve --max-logprobs`: DLN's scorer asks for the top 100


def _lp(v: float) -> float:
    """A log-prob JSON can carry (-inf -> -9999.0, as vLLM)."""
    return max(float(v), -9999.0)


LogprobTokens = Literal["text", "vocab"]   # `dlc serve --logprob-tokens`


def _top_dict(e: TokenLogprob, k: int, spelling: LogprobTokens = "text") -> dict[str, float] | None:
    """A completion's `top_logprobs` entry: the k most likely tokens, then the token itself when not among them;
    keyed by their text (OpenAI, current vLLM) or by their vocabulary strings (`vocab`, early vLLM)."""
    if e.logprob is None:
        return None
    d: dict[str, float] = {}
    if spelling == "vocab":
        for key, (_, _, v) in zip(e.top_vocab or (), (e.top or ())[:k]):
            d.setdefault(key, _lp(v))
        d.setdefault(e.vocab, _lp(e.logprob))
        return d
    for disp, _, v in (e.top or ())[:k]:
        d.setdefault(disp, _lp(v))
    d.setdefault(e.display, _lp(e.logprob))
    return d


def _top_list(e: TokenLogprob, k: int) -> list[dict[str, Any]]:
    """A chat token's `top_logprobs`: k entries (+ the token itself when not among them); [] for k = 0."""
    if k <= 0:
        return []
    out = [{"token": disp, "logprob": _lp(v), "bytes": list(b)} for disp, b, v in (e.top or ())[:k]]
    if all(t["token"] != e.display for t in out):
        out.append({"token": e.display, "logprob": _lp(e.logprob or 0.0), "bytes": list(e.piece)})
    return out


CLIENT_CODES = frozenset({"E640", "E641", "E643"})   # a chat template failing on the request, too long, empty
MAX_BODY = 16 * 1024 * 1024   # bytes of a request body: far above any prompt the context holds, refused with 413
BODY_TIMEOUT = 30.0           # seconds between two parts of a body: a client that stops sending mid-body gets 408


def _union_tag(x: Any) -> bool:
    """pydantic's name of a union member in an error's location ("str", "list[str]"): not a field of the request."""
    return isinstance(x, str) and (x in ("str", "int", "float", "bool", "none") or "[" in x or x.startswith("function-"))


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is a 413 (OpenAI-shaped), by its Content-Length before
    anything is read, or when the bytes read pass the limit (a chunked body has none): the body is read here, at
    most `max_bytes` of it, and handed on whole, so no body can take unbounded memory."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is over {self.max_bytes // (1024 * 1024)} MiB", code="body_too_large")

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large().response()(scope, receive, send)
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), BODY_TIMEOUT)
            except asyncio.TimeoutError:        # uvicorn has no body-read timeout: such a connection stayed forever
                return await ApiError(408, f"the request body stopped arriving for {BODY_TIMEOUT:g} s",
                                      code="request_timeout").response()(scope, receive, send)
            if message["type"] != "http.request":        # the client left while sending
                return await self.app(scope, _replay([message], receive), send)
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                return await self._too_large().response()(scope, receive, send)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(parts), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _replay(first: list[dict[str, Any]], receive: Callable[[], Any]) -> Callable[[], Any]:
    """An ASGI receive that returns `first`'s messages, then the real ones (http.disconnect, which requests watch)."""
    pending = list(first)

    async def replayed() -> Any:
        return pending.pop(0) if pending else await receive()

    return replayed


def create_app(lm: Servable, model_name: str, *, n_ctx: int | None = None,
               max_logprobs: int = MAX_LOGPROBS, logprobs: bool = True,
               logprob_tokens: LogprobTokens = "text") -> FastAPI:
    """The FastAPI app serving `lm` under the name `model_name`; `logprobs` / `top_logprobs` up to `max_logprobs`.
    With logprobs=False (`dlc serve --no-logprobs`) every request asking for log-probs is refused (400), as by a
    chat-only hosted model: clients and dlc's fallbacks for such backends can be tested locally."""
    # logprob_tokens spells the tokens of /v1/completions' `logprobs` (`tokens`, `top_logprobs` keys): "text" as
    # OpenAI and vLLM since 0.4 (" word"), "vocab" as vLLM's OpenAI server before (convert_ids_to_tokens, until
    # vllm-project/vllm#3065: the vocabulary's strings, "Ġword"). Clients written for the latter, like the DLN implementation, map each key back
    # with decode(convert_tokens_to_ids(key)): a text key that is no vocabulary string (every one with a leading
    # space) becomes the unknown token, so a class whose verbalizer is " word" is never found in the top-k
    app = FastAPI(title="dlc serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit)
    # the model serves one request at a time. An asyncio lock, awaited on the event loop: a queued request holds no
    # worker thread while it waits (a threading lock polled in the thread pool let 40 queued requests starve
    # /health of threads for seconds)
    lock = asyncio.Lock()
    ctx_size = n_ctx if n_ctx is not None else getattr(lm, "n_ctx", None)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        # 404 (no such route), 405 (wrong method), a body that cannot be parsed (100k-deep JSON...): OpenAI-shaped
        # like every other error, not FastAPI's {"detail": ...}
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(e.status_code, "invalid_request_error")
        res = ApiError(e.status_code, str(e.detail), type=kind).response()
        res.headers.update(e.headers or {})
        return res

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {}
        if first.get("type") == "json_invalid":       # its loc is ("body", byte offset), not a field
            return ApiError(400, f"invalid request: the body is not valid JSON ({first.get('msg', 'invalid')})"
                            ).response()
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body" and not _union_tag(x))
        msg = str(first.get("msg", "invalid"))
        if loc == "" and " is not valid text" in msg:  # the lone-surrogate check names the field in its message
            loc = msg.split("Value error, ", 1)[-1].split(" is not valid text", 1)[0]
        return ApiError(400, f"invalid request: {loc + ': ' if loc else ''}{msg}", param=loc or None).response()

    @app.exception_handler(Cancelled)
    async def _cancelled(_: Request, e: Cancelled) -> JSONResponse:
        # nobody reads it (the client is gone; uvicorn drops it): 499 as nginx logs a client that closed first
        return ApiError(499, f"{e}: the client closed the connection", code="client_closed_request").response()

    @app.exception_handler(DlcError)
    async def _dlc_error(_: Request, e: DlcError) -> JSONResponse:
        # the request's fault (too long, empty, a template that cannot render it): 400, not retried by clients;
        # anything else (llama_decode failed...) is the server's: 500, which clients retry or fail over
        status, kind = (400, "invalid_request_error") if e.code in CLIENT_CODES else (500, "server_error")
        return ApiError(status, str(e.message) + (f" (hint: {e.hint})" if e.hint else ""), type=kind,
                        code=e.code).response()

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        # a bug in dlc serve or its model: OpenAI-shaped 500 (uvicorn still logs the traceback for the operator)
        return ApiError(500, f"internal server error ({type(e).__name__})", type="server_error").response()

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise ApiError(404, f"The model '{name}' does not exist; this server serves '{model_name}'",
                           param="model", code="model_not_found")

    def check_common(body: _Common, max_tokens: int | None, param: str = "max_tokens") -> int:
        check_model(body.model)
        if body.stream:
            raise ApiError(400, "stream=true is not supported by dlc serve", param="stream")
        mt = 16 if max_tokens is None else max_tokens
        if mt < 0:
            raise ApiError(400, f"{param} must be >= 0 (got {mt})", param=param)
        return mt

    def cancel_scope(event: threading.Event) -> contextlib.AbstractContextManager[Any]:
        scope = getattr(lm, "cancelled_by", None)       # EmbeddedLM; a stand-in model runs to the end
        return scope(event) if scope is not None else contextlib.nullcontext()

    async def acquire(left: asyncio.Event) -> None:
        """Take the model lock, or raise `Cancelled` when the client leaves first (`left` is set). However this wait
        ends, the lock is either held by this request or left alone."""
        task = asyncio.ensure_future(lock.acquire())
        gone = asyncio.ensure_future(left.wait())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                raise Cancelled("the request was cancelled before it started")
        except BaseException:
            task.cancel()                        # asyncio.Lock.acquire, cancelled, does not take the lock
            if task.done() and not task.cancelled() and task.exception() is None:
                lock.release()                   # it had: give it back
            raise
        finally:
            gone.cancel()

    async def run_model(request: Request, work: Callable[[], T]) -> T:
        """`work()` under the model lock in a worker thread, cancelled when the client disconnects: waiting for the
        lock, it gives up as soon as the client leaves; running, the model raises `Cancelled` before its next decode.
        The lock is released when the thread's work ends (a callback on it), not when this coroutine ends: were the
        handler cancelled (server shutdown) while the thread still ran, the next request must not start beside it."""
        cancel = threading.Event()          # read by the model's thread
        left = asyncio.Event()              # the same, for the wait on the event loop

        def cancellable() -> T:
            with cancel_scope(cancel):
                return work()

        async def watch() -> None:
            # the body has been read: the next ASGI message is http.disconnect, when the client closes the
            # connection (uvicorn's connection_lost), as Starlette's StreamingResponse listens for it
            while (await request.receive())["type"] != "http.disconnect":
                pass
            cancel.set()
            left.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await acquire(left)
            if cancel.is_set():
                lock.release()
                raise Cancelled("the request was cancelled before it started")
            job = asyncio.ensure_future(run_in_threadpool(cancellable))   # no await since acquire: no gap
            job.add_done_callback(lambda _: lock.release())
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                cancel.set()                     # the model stops before its next decode; the job then ends
                left.set()
                raise
        finally:
            watcher.cancel()

    def n_tokens(text: str) -> int:
        return len(lm.tokenize(text))

    def check_context(text: str, max_tokens: int) -> int:
        n = n_tokens(text)
        if ctx_size is not None and n + max_tokens > ctx_size:
            raise ApiError(400, f"This model's maximum context length is {ctx_size} tokens. However, you requested "
                                f"{n + max_tokens} tokens ({n} in the prompt, {max_tokens} for the completion). "
                                "Please reduce the length of the prompt or of max_tokens.",
                           param="prompt", code="context_length_exceeded")
        return n

    exact_logprobs = hasattr(lm, "echo_logprobs") and hasattr(lm, "generate_logprobs")   # EmbeddedLM

    def check_k(k: int | None, param: str) -> None:
        if k is not None and not logprobs:
            raise ApiError(400, f"{param}: this server does not return log-probabilities (dlc serve --no-logprobs)",
                           param=param)
        if k is not None and k > max_logprobs:
            raise ApiError(400, f"{param}: requested {k} log-probs per token, but this server returns at most "
                                f"{max_logprobs} (dlc serve --max-logprobs)", param=param)

    def generate(prompt: Prompt, body: _Common, max_tokens: int,
                 k: int | None = None) -> tuple[GenerateResult, list[list[TokenLogprob]] | None]:
        """Generate; with `k` (and an EmbeddedLM) also each sample's tokens, log-probs and top-k as sampled."""
        req = GenerateRequest(prompt=prompt, max_tokens=max_tokens, temperature=body.temperature,
                              top_p=body.top_p, stop=body.stops(), n=body.n,
                              seed=body.seed if body.seed is not None else 0)
        toks = None
        if k is not None and exact_logprobs:
            res, toks = lm.generate_logprobs(req, k)  # type: ignore[attr-defined]
        else:
            res = lm.generate([req])[0]
        if len(res.texts) != body.n:
            raise RuntimeError(f"the model returned {len(res.texts)} samples for n={body.n}")
        return res, toks

    def completion_logprobs(prompt: list[TokenLogprob], gen: list[TokenLogprob], text: str, out: str,
                            k: int) -> dict[str, Any]:
        """OpenAI `logprobs` of echoed prompt tokens and generated tokens; offsets count from the start of the
        prompt (a generated token past the returned text, the end token or the one completing a stop string, sits
        at its end)."""
        lp: dict[str, Any] = {"tokens": [], "token_logprobs": [], "text_offset": [], "top_logprobs": []}
        for e, off in [(e, e.offset) for e in prompt] + [(e, len(text) + min(e.offset, len(out))) for e in gen]:
            lp["tokens"].append(e.vocab if logprob_tokens == "vocab" else e.text)
            lp["token_logprobs"].append(None if e.logprob is None else _lp(e.logprob))
            lp["text_offset"].append(off)
            lp["top_logprobs"].append(_top_dict(e, k, logprob_tokens))
        return lp

    def token_logprobs(text: str, start: int, k: int) -> dict[str, Any]:
        """A stand-in model's `logprobs` for the tokens of `text` from char `start` (teacher forcing)."""
        toks = [t for t in lm.echo(text) if t[1] >= start or start == 0]
        return {"tokens": [t[0] for t in toks], "token_logprobs": [t[2] for t in toks],
                "text_offset": [t[1] for t in toks],
                "top_logprobs": [None if t[2] is None or k == 0 else {t[0]: t[2]} for t in toks]}

    @app.get("/health")
    async def health() -> dict[str, str]:      # async: answered on the event loop, whatever the model is doing
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry: dict[str, Any] = {"id": model_name, "object": "model", "created": created, "owned_by": "dlc",
                                 "root": lm.model_id}
        if ctx_size is not None:
            entry["max_model_len"] = ctx_size
        return {"object": "list", "data": [entry]}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request) -> dict[str, Any]:
        mt = check_common(body, body.max_tokens)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise ApiError(400, "prompt must not be empty", param="prompt")
        if len(prompts) * body.n > MAX_CHOICES:     # each choice is held until the response is sent
            raise ApiError(400, f"{len(prompts)} prompts x n = {body.n} asks for {len(prompts) * body.n} choices; "
                                f"dlc serve returns at most {MAX_CHOICES} per request", param="prompt")
        if mt == 0 and not body.echo:
            raise ApiError(400, "max_tokens must be >= 1 unless echo is true", param="max_tokens")
        k = body.logprobs
        check_k(k, "logprobs")
        choices: list[dict[str, Any]] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0}

        def work() -> None:
            tokens = [lm.tokenize(text) for text in prompts]
            for text in prompts:
                usage["prompt_tokens"] += check_context(text, mt)
            # token order: consecutive prompts share their longest prefixes (sequence 0 keeps the last one)
            for i in sorted(range(len(prompts)), key=lambda i: tokens[i]):
                text = prompts[i]
                echoed: list[TokenLogprob] = []
                if body.echo and k is not None and exact_logprobs:
                    echoed = lm.echo_logprobs(text, k)  # type: ignore[attr-defined]
                gen: list[list[TokenLogprob]] | None = None
                if mt == 0:
                    outs, reasons, gen = [""] * body.n, ["length"] * body.n, [[] for _ in range(body.n)]
                else:
                    res, gen = generate(ModelText(text), body, mt, k)   # a completion prompt is model-ready text
                    outs, reasons = list(res.texts), list(res.finish_reasons) or ["stop"] * body.n
                    usage["completion_tokens"] += res.completion_tokens
                for j, out in enumerate(outs):
                    full = text + out if body.echo else out
                    lp = None
                    if k is not None and exact_logprobs and gen is not None:
                        lp = completion_logprobs(echoed, gen[j], text, out, k)
                    elif k is not None:
                        # offsets count from the start of the prompt, as OpenAI and vLLM report them
                        lp = token_logprobs(text + out, 0 if body.echo else len(text), k)
                    choices.append({"index": i * body.n + j, "text": full, "logprobs": lp,
                                    "finish_reason": reasons[j] if j < len(reasons) else "stop"})

        await run_model(request, work)
        choices.sort(key=lambda c: c["index"])
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": choices, "usage": usage}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request) -> dict[str, Any]:
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        mt = check_common(body, body.max_completion_tokens if body.max_completion_tokens is not None
                          else body.max_tokens, param)
        if mt == 0:
            raise ApiError(400, f"{param} must be >= 1", param=param)
        prompt = chat_prompt(body.messages)
        k = body.top_logprobs or 0
        check_k(k if body.logprobs or body.top_logprobs is not None else None, "top_logprobs")
        choices = []

        def work() -> tuple[int, GenerateResult]:
            rendered = lm.render(prompt)
            n_prompt = check_context(rendered, mt)
            res, gen = generate(prompt, body, mt, k if body.logprobs else None)
            for j, out in enumerate(res.texts):
                lp = None
                if body.logprobs and gen is not None:
                    lp = {"content": [{"token": e.display, "logprob": _lp(e.logprob or 0.0), "bytes": list(e.piece),
                                       "top_logprobs": _top_list(e, k)} for e in gen[j]]}
                elif body.logprobs:
                    toks = [t for t in lm.echo(rendered + out) if t[1] >= len(rendered)]
                    lp = {"content": [{"token": t[0], "logprob": t[2], "bytes": list(t[0].encode("utf-8")),
                                       "top_logprobs": [{"token": t[0], "logprob": t[2]}] if k else []}
                                      for t in toks]}
                reason = res.finish_reasons[j] if j < len(res.finish_reasons) else "stop"
                choices.append({"index": j, "message": {"role": "assistant", "content": out},
                                "logprobs": lp, "finish_reason": reason})
            return n_prompt, res

        n_prompt, res = await run_model(request, work)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": res.completion_tokens,
                 "total_tokens": n_prompt + res.completion_tokens}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name, "choices": choices, "usage": usage}

    @app.post("/apply-template")
    async def apply_template(body: TemplateBody, request: Request) -> dict[str, str]:
        prompt = chat_prompt(body.messages)
        return {"prompt": await run_model(request, lambda: lm.render(prompt))}

    return app


# the socket and uvicorn runner live in dlc/server/runner.py (re-exported: `from dlc.server.app import Server`)
from dlc.server.runner import Server, bind_socket, url_of  # noqa: E402,F401

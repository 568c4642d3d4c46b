"""`dlc serve`'s HTTP contract under bad or heavy requests, over real HTTP on 127.0.0.1 with the deterministic stand-in
model (tests/faultproxy.py): body and response size limits, OpenAI-shaped 4xx/5xx with the right `param`, strict
JSON types, parameters dlc does not implement refused, and /health answering while requests queue for the model."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import httpx
import pytest

from dlc.errors import DlcLMError
from dlc.server.app import MAX_BODY, Server, bind_socket, create_app
from dlc.server.requests import MAX_CHOICES
from tests.faultproxy import ScriptedServable


def _root(url: str) -> str:
    return url[: -len("/v1")]


def _post(url: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(_root(url) + path, content=content, headers={"Content-Type": "application/json"},
                      timeout=30, **kw)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


class _Serving:
    """A stand-in model served in-process on 127.0.0.1 (stopped by the fixture)."""

    def __init__(self, lm: Any) -> None:
        self.srv = Server(create_app(lm, "scripted", n_ctx=256), bind_socket("127.0.0.1", 0))
        self.url = self.srv.start()


@pytest.fixture()
def serving() -> Iterator[Any]:
    made: list[_Serving] = []

    def start(lm: Any) -> str:
        made.append(_Serving(lm))
        return made[-1].url

    yield start
    for s in made:
        s.srv.stop()


# ------------------------------------------------------------------------------------------------ sizes

def test_a_body_over_the_limit_is_413_by_length_and_by_bytes_read(server: str) -> None:
    """Was 200 after reading all of it (a 40 MiB prompt took 5x its size in memory); a chunked body has no
    Content-Length, so the bytes read are counted too."""
    big = b'{"prompt": "' + b"a" * (MAX_BODY + 10) + b'", "max_tokens": 1}'
    err = _error(_post(server, "/v1/completions", big), 413)
    assert err["code"] == "body_too_large" and "16 MiB" in err["message"]

    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(MAX_BODY // (1 << 20) + 1):
            yield b"a" * (1 << 20)
        yield b'", "max_tokens": 1}'

    r = httpx.post(_root(server) + "/v1/completions", content=chunks(), timeout=30,
                   headers={"Content-Type": "application/json"})
    assert _error(r, 413)["code"] == "body_too_large"
    assert _post(server, "/v1/completions", {"prompt": "still serving", "max_tokens": 2}).status_code == 200


def test_prompts_times_n_is_capped(server: str) -> None:
    """300 prompts x n = 128 from a 1.5 kB body made a 28.7 MB response; now a 400 above MAX_CHOICES choices."""
    n = MAX_CHOICES // 16 + 1
    err = _error(_post(server, "/v1/completions", {"prompt": ["a"] * 16, "n": n, "max_tokens": 1,
                                                   "temperature": 0.5}), 400)
    assert err["param"] == "prompt" and f"at most {MAX_CHOICES}" in err["message"]
    r = _post(server, "/v1/completions", {"prompt": ["a"] * 16, "n": n - 1, "max_tokens": 1, "temperature": 0.5})
    assert r.status_code == 200 and len(r.json()["choices"]) == 16 * (n - 1)


# ------------------------------------------------------------------------------------------------ errors

class _Failing(ScriptedServable):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def generate(self, requests: Any) -> Any:
        raise self.error


@pytest.mark.parametrize("error, status, kind, code", [
    (RuntimeError("boom"), 500, "server_error", None),
    (DlcLMError("llama_decode failed with status 1", code="E642"), 500, "server_error", "E642"),
    (DlcLMError("context too long", code="E641"), 400, "invalid_request_error", "E641"),
])
def test_server_faults_are_5xx_and_request_faults_4xx(serving: Any, error: BaseException, status: int, kind: str,
                                                      code: str | None) -> None:
    """A bug was a text/plain 500; a decode failure was a 400 (clients do not retry a 400, so one failure ended a
    fit instead of failing over to another replica)."""
    url = serving(_Failing(error))
    err = _error(_post(url, "/v1/completions", {"prompt": "x", "max_tokens": 2}), status)
    assert err["type"] == kind and err["code"] == code
    if status == 500 and code is None:
        assert "boom" not in err["message"]          # a bug's text is for the log, not the client


@pytest.mark.parametrize("body, param, says", [
    ('{"prompt": ', None, "not valid JSON"),                                  # was param "10" (a byte offset)
    ({"prompt": 5, "max_tokens": 1}, "prompt", "valid string"),               # was "prompt.str" (a union tag)
    ({"prompt": ["a", 1], "max_tokens": 1}, "prompt", "valid string"),        # was "prompt.str"
    ({"prompt": "a\ud800", "max_tokens": 1}, "prompt", "not valid text"),     # was null
    ({"prompt": "a", "max_tokens": "5"}, "max_tokens", "valid integer"),      # was coerced to 5
    ({"prompt": "a", "max_tokens": True}, "max_tokens", "valid integer"),     # was coerced to 1
    ({"prompt": "a", "logprobs": True}, "logprobs", "valid integer"),         # was k = 1
    ({"prompt": "a", "temperature": "NaN"}, "temperature", "valid number"),
    ({"prompt": "a", "logit_bias": {"50256": -100}}, "logit_bias", "not supported"),   # was dropped silently
    ({"prompt": "a", "best_of": 3}, "best_of", "not supported"),
    ({"prompt": "a", "suffix": "end"}, "suffix", "not supported"),
    ({"prompt": "a", "presence_penalty": 0.5}, "presence_penalty", "not supported"),
    ({"prompt": "a", "top_k": 40}, "top_k", "not supported"),                 # vLLM's: was ignored
])
def test_completion_errors_name_the_field(server: str, body: Any, param: str | None, says: str) -> None:
    if isinstance(body, dict) and "\ud800" in str(body.get("prompt")):
        body = json.dumps(body)                       # json.dumps escapes the lone surrogate as \ud800
    err = _error(_post(server, "/v1/completions", body), 400)
    assert err["param"] == param and says in err["message"], err


@pytest.mark.parametrize("body, param, says", [
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages", "needs `text`, a string"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages", "a string"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs", "logprobs = true"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}, "max_completion_tokens", ">= 1"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": -3}, "max_completion_tokens", ">= 0"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}, "temperature", "finite"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools", "not supported"),
])
def test_chat_errors_name_the_field(server: str, body: Any, param: str, says: str) -> None:
    """A text part without a string `text` became "None" / "5" in the prompt (200)."""
    text = json.dumps(body).replace("Infinity", "1e999")
    err = _error(_post(server, "/v1/chat/completions", text), 400)
    assert err["param"] == param and says in err["message"], err
    if param == "messages":
        assert _error(_post(server, "/apply-template", {"messages": body["messages"]}), 400)["param"] == "messages"


def test_parameters_at_their_no_op_values_are_accepted(server: str) -> None:
    """What OpenAI clients send by default (logit_bias {}, best_of = n, response_format text) is not refused."""
    r = _post(server, "/v1/completions", {"prompt": "a", "max_tokens": 2, "logit_bias": {}, "best_of": 1,
                                          "temperature": 0, "presence_penalty": 0, "frequency_penalty": 0.0})
    assert r.status_code == 200, r.text
    r = _post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                               "response_format": {"type": "text"}, "temperature": 1})
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------------ queueing

def _send_concurrently(url: str, n: int) -> tuple[list[int], list[threading.Thread]]:
    """n one-token completions, each from its own thread, all started: (status codes as they arrive, threads)."""
    codes: list[int] = []

    def one(i: int) -> None:
        codes.append(_post(url, "/v1/completions", {"prompt": f"p{i}", "max_tokens": 1}).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return codes, threads


class _Slow(ScriptedServable):
    def generate(self, requests: Any) -> Any:
        time.sleep(0.25)
        return super().generate(requests)


def test_health_answers_at_once_while_requests_queue(serving: Any) -> None:
    """44 requests queued for the model (one at a time, 0.25 s each): /health and /v1/models used to wait for a
    worker thread (each queued request held one of the pool's 40 while polling the lock): 1.34 s at 0.2 s each
    before the change, 0.06 s after (both beside a grid cell), 7.7 s at 80 queued. And no cap on connections (a cap of 64
    answered 503 to clients that queued more)."""
    url = serving(_Slow())
    done, threads = _send_concurrently(url, 44)
    time.sleep(0.5)                                   # all sent, most still waiting for the model
    t0 = time.monotonic()
    assert httpx.get(_root(url) + "/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(url + "/models", timeout=10).status_code == 200
    waited = time.monotonic() - t0
    pending = 44 - len(done)
    for t in threads:
        t.join()
    assert pending >= 20, pending                     # the queue was really there when /health was asked
    assert waited < 0.8, waited
    assert done == [200] * 44


def test_a_body_that_stops_arriving_is_408(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers with Content-Length 100, then 5 bytes, then nothing: the connection used to stay open forever."""
    import socket

    import dlc.server.app as server_app

    monkeypatch.setattr(server_app, "BODY_TIMEOUT", 0.5)
    host, port = server[len("http://"):-len("/v1")].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"pr")
        reply = b""
        while b"request_timeout" not in reply:        # headers and body may come in separate segments
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        text = reply.decode()
    assert text.startswith("HTTP/1.1 408") and "\"code\":\"request_timeout\"" in text, text
    assert _post(server, "/v1/completions", {"prompt": "next", "max_tokens": 1}).status_code == 200


class _Paced(ScriptedServable):
    def generate(self, requests: Any) -> Any:
        time.sleep(0.03)
        return super().generate(requests)


def test_more_clients_than_any_cap_are_all_served(serving: Any) -> None:
    """100 requests at once, 0.03 s each (so they really overlap; a sweep's fits sharing one server): all
    answered. A connection cap of 64 (briefly tried) answered 503 beyond it, and a client with max_concurrency
    200 failed after its retries."""
    codes, threads = _send_concurrently(serving(_Paced()), 100)
    for t in threads:
        t.join()
    assert codes == [200] * 100

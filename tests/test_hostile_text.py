"""Text that is not text and JSON too deep to be data (issue 16): lone surrogates and 100k-deep JSON in `dlc serve`
request bodies, in `dlc run`'s stdin and in a server's answers; `dlc serve` errors all OpenAI-shaped. Real HTTP on
127.0.0.1 over the scripted servable; no model."""
from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from dlc.lm.base import GenerateRequest
from dlc.lm.cache import DiskCache
from dlc.lm.cached import CachedLM
from dlc.lm.openai_backend import OpenAILM

from conftest import REPO

DEEP = "[" * 100_000 + "]" * 100_000


def _openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return err


# ------------------------------------------------------------------------------------------------ dlc serve

@pytest.mark.parametrize("path,body", [
    ("/completions", '{"prompt": "a \\ud800 b", "max_tokens": 2}'),
    ("/completions", '{"prompt": ["ok", "\\udfff"], "max_tokens": 2}'),
    ("/completions", '{"prompt": "ok", "stop": ["\\ud800"], "max_tokens": 2}'),
    ("/chat/completions", '{"messages": [{"role": "user", "content": "\\ud83d"}]}'),
    ("/chat/completions", '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ude00"}]}]}'),
])
def test_lone_surrogates_in_a_request_are_a_400_naming_the_field(server, path, body):
    """Used to be an HTTP 500 in plain text (UnicodeEncodeError in the tokenizer)."""
    r = httpx.post(server + path, content=body.encode(), headers={"content-type": "application/json"}, timeout=30)
    err = _openai_error(r, 400)
    assert "not valid text" in err["message"], err
    ok = httpx.post(server + "/completions", json={"prompt": "a \U0001F600 b", "max_tokens": 2}, timeout=30)
    assert ok.status_code == 200                                        # an escaped pair is one character


def test_a_100k_deep_body_is_a_400_and_the_server_goes_on(server):
    for body in (DEEP, '{"prompt": "x", "max_tokens": 1, "extra": ' + DEEP + "}"):
        r = httpx.post(server + "/completions", content=body.encode(), headers={"content-type": "application/json"},
                       timeout=30)
        _openai_error(r, 400)
    assert httpx.post(server + "/completions", json={"prompt": "x", "max_tokens": 1}, timeout=30).status_code == 200


def test_every_error_is_openai_shaped_and_openapi_is_not_served(server):
    root = server[: -len("/v1")]
    _openai_error(httpx.get(root + "/nope", timeout=30), 404)
    _openai_error(httpx.get(server + "/completions", timeout=30), 405)
    _openai_error(httpx.post(server + "/completions", content=b"{not json",
                             headers={"content-type": "application/json"}, timeout=30), 400)
    _openai_error(httpx.get(root + "/openapi.json", timeout=30), 404)


# ------------------------------------------------------------------------------------------------ model output

class _Lonely(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose answer holds a lone surrogate escape (as a broken server may send)."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        data = b'{"choices": [{"index": 0, "text": "yes \\ud800!", "finish_reason": "stop"}], ' \
               b'"usage": {"prompt_tokens": 3, "completion_tokens": 2}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a: object) -> None:
        pass


def test_a_lone_surrogate_in_a_models_answer_is_replaced_and_cached(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Lonely)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        lm = CachedLM(OpenAILM("m", [f"http://127.0.0.1:{srv.server_address[1]}/v1"], probe=False, timeout=5.0),
                      DiskCache(tmp_path))
        try:
            req = GenerateRequest("Is it?", max_tokens=2, temperature=0.0)
            first = lm.generate([req])[0]
            again = lm.generate([req])[0]
        finally:
            lm.close()
    finally:
        srv.shutdown()
        srv.server_close()
    assert first.texts == ("yes \ufffd!",) and again.texts == first.texts and again.cached


# ------------------------------------------------------------------------------------------------ dlc run's stdin

@pytest.mark.parametrize("line", [b'{"x": "\\ud800 go"}\n', b'{"x": "caf\xe9"}\n'])
def test_dlc_run_input_that_is_not_text(tmp_path, line):
    net = tmp_path / "net.dln"
    net.write_text((REPO / "graphs" / "dln1.dln").read_text() + '\nmodel default { backend = scripted }\n')
    p = subprocess.run([sys.executable, "-m", "dlc", "run", str(net), "--no-cache"], input=line,
                       capture_output=True, timeout=120, cwd=tmp_path)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1 and "Traceback" not in err, err
    assert "error[E124]" in err, err


# ------------------------------------------------------------------------------------------------ max_retries

def test_max_retries_is_a_model_key_and_reaches_the_backend(server, monkeypatch):
    """The README documents `max_retries`; it used to be E312 (unknown key). At its default it is left out of the
    config identity, so runs started before the key existed keep their hash."""
    import dataclasses

    from dlc.artifacts.identity import config_identity, resolved_config
    from dlc.lang.compiler import compile_source
    from dlc.lm.registry import open_backend

    src = (REPO / "graphs" / "dln1.dln").read_text()
    g = compile_source(src + '\nmodel remote { backend = openai  model = "scripted"  max_retries = 2 }\n',
                       "net.dln")
    assert g.models["remote"].max_retries == 2
    monkeypatch.setenv("OPENAI_BASE_URL", server)
    lm = open_backend(g.models["remote"])
    try:
        assert lm.max_retries == 2
    finally:
        lm.close()
    plain = compile_source(src, "net.dln")
    assert plain.models["default"].max_retries == 6
    assert "max_retries" not in resolved_config(plain)["models"]["default"]
    assert config_identity(plain) != config_identity(dataclasses.replace(
        plain, models={**plain.models, "default": dataclasses.replace(plain.models["default"], max_retries=3)}))

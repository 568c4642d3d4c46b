"""Secrets dlc holds never reach a message, a log line or a file (issue 16, item 2): a password in a base URL and
the API key are masked in every error (E621/E622/E624/E628 ...), including a server's error body that echoes the
Authorization header back, in warnings, in the CLI's bug traceback, and nothing of them lands in a run directory.
Loopback servers only; the scripted model."""
from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import DATA, REPO
from dlc.errors import DlcError, DlcLMError, redact, render_error
from dlc.lm.base import Capabilities, ScoreRequest
from dlc.lm.openai_backend import OpenAILM

KEY = "sk-planted-KEY-0123456789abcdef"
PASSWORD = "PW-planted-9876zyx"


def _leaks(text: str) -> list[str]:
    return [s for s in (KEY, PASSWORD, KEY[:20], PASSWORD[:12]) if s in text]


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with `status` and an error body quoting the request's headers (as some proxies do)."""

    status = 401

    def _answer(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        auth = self.headers.get("authorization", "")
        body = {"error": {"message": f"Incorrect API key provided: {auth}. Key {KEY} seen; request headers: "
                                     f"{dict(self.headers)}; url http://alice:{PASSWORD}@upstream/v1 " + "x" * 400}}
        data = json.dumps(body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture()
def echo_server():
    servers = []

    def start(status: int) -> str:
        handler = type("H", (_Echo,), {"status": status})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://alice:{PASSWORD}@127.0.0.1:{srv.server_address[1]}/v1"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _lm(urls, **kw) -> OpenAILM:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.02)
    return OpenAILM("m", urls, KEY, **kw)


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://alice:{PASSWORD}@127.0.0.1:{port}/v1"


def _shown(e: DlcError) -> str:
    return str(e) + "\n" + render_error(e) + "\n" + repr(e.args) + "\n" + (e.hint or "")


def test_redact_masks_url_credentials_auth_headers_and_known_keys():
    from dlc.errors import add_secret

    add_secret(KEY)
    text = (f"cannot reach https://bob:{PASSWORD}@h.example:8443/v1; https://tok3n@h/x; "
            f'"Authorization": "Bearer abcdefghijklmnop12"; authorization: Basic Ym9iOnB3; key={KEY}')
    out = redact(text)
    assert not _leaks(out) and "tok3n" not in out and "abcdefghijklmnop12" not in out and "Ym9iOnB3" not in out
    assert "https://***@h.example:8443/v1" in out and "https://***@h/x" in out
    assert redact("http://127.0.0.1:8000/v1 and a@b.c") == "http://127.0.0.1:8000/v1 and a@b.c"   # nothing to hide


def test_credentials_in_a_url_query_are_masked():
    """`?api_key=...` (some proxies take the key there): the value is masked wherever it appears, the rest of the
    URL is kept; parameters that name no credential (api-version) are kept too."""
    from dlc.errors import add_url_secrets

    url = "https://h.example/v1?api-version=2024-02-01&api_key=Zq9sEcReT77&sig=abc%2Fdef12"
    assert redact(url) == "https://h.example/v1?api-version=2024-02-01&api_key=***&sig=***"
    add_url_secrets(url)
    assert redact("the server said: bad key Zq9sEcReT77 (abc/def12)") == "the server said: bad key *** (***)"


def test_a_malformed_base_url_is_e620_before_any_connection_and_masked(monkeypatch):
    """A port over 65535 or not a number, a broken IPv6 bracket, white space: were OverflowError / InvalidURL
    tracebacks from inside the HTTP client."""
    from dlc.lm.openai_backend.transport import Transport

    for url, why in (("http://127.0.0.1:99999/v1", "its port is over 65535"),
                     ("http://127.0.0.1:abc/v1", "its port is not a number"),
                     ("http://[::1/v1", "IPv6 address is not closed"), ("http://127.0.0.1 :8/v1", "contains white space"),
                     (f"http://bob:{PASSWORD}@127.0.0.1:99999/v1?token=T0kenValue9", "its port is over 65535"),
                     ("http://bob:Xy7/q9#Zr2w@10.0.0.1:8000/v1", "its port is not a number")):   # / and # unencoded
        with pytest.raises(DlcError) as ei:
            Transport("m", [url], probe=False)
        assert ei.value.code == "E620" and why in ei.value.message, ei.value.message
        shown = _shown(ei.value)
        assert not _leaks(shown) and "T0kenValue9" not in shown and not {"Xy7", "q9", "Zr2w"} & set(re.split(r"\W+", shown))


def test_401_echoing_the_authorization_header_is_masked(echo_server):
    url = echo_server(401)
    try:                                   # the probe either fails (E624) or records the refusals in its notes
        lm = _lm([url])
    except DlcLMError as e:
        shown = _shown(e)
    else:
        try:
            shown = json.dumps(lm.info.to_json()) + json.dumps(lm.endpoint_report())
            with pytest.raises(DlcLMError) as ei:
                lm.score([ScoreRequest("a", " b")])
            shown += _shown(ei.value)
        finally:
            lm.close()
    assert not _leaks(shown), shown
    assert "Incorrect API key" in shown and "***" in shown


def test_5xx_echo_after_retries_is_masked_and_cut_after_masking(echo_server):
    url = echo_server(500)
    lm = _lm([url], probe=False, max_retries=1)
    try:
        with pytest.raises(DlcLMError) as ei:
            lm.score([ScoreRequest("a", " b")])
    finally:
        lm.close()
    assert ei.value.code == "E622" and not _leaks(_shown(ei.value)), _shown(ei.value)


def test_unreachable_and_missing_capability_do_not_show_the_password():
    with pytest.raises(DlcLMError) as ei:
        _lm([_dead_url()], max_retries=0)
    assert ei.value.code == "E621" and not _leaks(_shown(ei.value)) and "http://***@127.0.0.1:" in str(ei.value)
    lm = _lm([_dead_url()], probe=False)
    try:
        object.__setattr__(lm, "capabilities", Capabilities(prompt_logprobs=False))
        with pytest.raises(DlcLMError) as ei:
            lm.score([ScoreRequest("a", " b")])
        assert ei.value.code == "E628" and not _leaks(_shown(ei.value))
        assert not _leaks(repr(lm) + json.dumps(lm.endpoint_report()))
    finally:
        lm.close()


def test_cli_bug_traceback_is_masked(capsys, monkeypatch):
    import argparse

    from dlc import cli

    def boom(args):
        raise RuntimeError(f"connection to http://alice:{PASSWORD}@10.0.0.1/v1 failed with {KEY}")

    def parser():
        p = argparse.ArgumentParser()
        p.set_defaults(func=boom)
        return p

    from dlc.errors import add_secret

    add_secret(KEY)
    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main([]) == 3
    err = capsys.readouterr().err
    assert "RuntimeError" in err and not _leaks(err), err


@pytest.mark.skipif(not (DATA / "Ordered-Prompt").is_dir(), reason="offline data absent")
def test_fit_over_a_server_with_credentials_leaves_no_secret_anywhere(tmp_path, monkeypatch, capsys):
    """A whole fit against `dlc serve` (scripted) at a URL with a password and a key: nothing of either in any file
    of the run directory, the compiled network, the cache, or the output."""
    from dlc.cli import main
    from dlc.server.app import Server, bind_socket, create_app
    from tests.faultproxy import ScriptedServable

    srv = Server(create_app(ScriptedServable(), "scripted", n_ctx=4096), bind_socket("127.0.0.1", 0))
    url = srv.start()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("PLANT_URLS", url.replace("http://", f"http://alice:{PASSWORD}@"))
        monkeypatch.setenv("PLANT_KEY", KEY)
        Path("net.dln").write_text((REPO / "graphs" / "dln1.dln").read_text() +
                                   '\nmodel default { backend = openai  model = "scripted"  base_url_env = "PLANT_URLS"'
                                   '  api_key_env = "PLANT_KEY"  timeout = 10 }\n')
        rc = main(["fit", "net.dln", "--set", "fit.iters=1", "--set", "fit.batch_size=2",
                   "--set", "fit.num_p_samples=2", "--set", "data.train_size=4", "--set", "data.dev_size=2",
                   "--set", "data.test_size=2", "--data-dir", str(DATA), "--no-progress"])
        out, err = capsys.readouterr()
    finally:
        srv.stop()
    assert rc == 0, err
    assert not _leaks(out + err)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.json" for p in files)
    for p in files:
        assert not _leaks(p.read_bytes().decode("utf-8", "replace")), p


# ------------------------------------------------------------------------------------------------ item 3
def test_key_like_env_names_are_refused_also_from_set_and_python(tmp_path, monkeypatch, capsys):
    from dlc.cli import main
    from dlc.errors import CompileFailed
    from dlc.ir import ModelConfig
    from dlc.lang.check import looks_like_secret
    from dlc.lang.compiler import compile_source
    from dlc.lm.registry import open_backend

    for name in ("OPENAI_API_KEY", "VLLM_URLS", "HF_TOKEN", "hf_token", "MYSERVICE2024TOKENKEY", "MyCompanyKey2",
                 "AZURE_OPENAI_API_KEY_WESTEUROPE2", "MY_COMPANY_PRODUCTION_OPENAI_COMPATIBLE_API_KEY"):
        assert not looks_like_secret(name), name
    for value in ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "gsk_" + "a1B2" * 13, "sk-proj-123456789abcdef",
                  "AKIAIOSFODNN7EXAMPLE", "deadbeefcafebabe0123456789abcdef", "abcdEFGH1234ijklMNOP5678"):
        assert looks_like_secret(value), value
    src = (REPO / "graphs" / "dln1.dln").read_text() + '\nmodel r { backend = openai  model = "m" }\n'
    for key, value in (("api_key_env", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"), ("api_key_env", '"KEY\n"'),
                       ("base_url_env", "http://u:p@h/v1"), ("api_key_env", "A B")):
        with pytest.raises(CompileFailed) as ei:
            compile_source(src, "x.dln", {f"model.r.{key}": value})
        assert [e.code for e in ei.value.errors] == ["E315"]
    # a ModelConfig built in Python skips the compiler: refused when opened, before anything is written
    with pytest.raises(DlcError) as ei:
        open_backend(ModelConfig(name="r", backend="openai", model="m", api_key_env="hf_AbCdEfGhIjKlMnOpQrStUvWxYz0"))
    assert ei.value.code == "E315"
    # nothing is written by `dlc compile` for such a file
    monkeypatch.chdir(tmp_path)
    Path("k.dln").write_text(src.replace('model = "m" }', 'model = "m"  api_key_env = "gsk_' + "a1B2" * 13 + '" }'))
    assert main(["compile", "k.dln"]) == 1
    assert "E315" in capsys.readouterr().err and not Path(".dlc").exists()


@pytest.mark.skipif(not (DATA / "Ordered-Prompt").is_dir(), reason="offline data absent")
def test_unset_key_variable_stops_the_fit_before_the_run_directory(tmp_path, monkeypatch, capsys):
    from dlc.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLANT_URLS", _dead_url())
    monkeypatch.delenv("PLANT_KEY", raising=False)
    Path("net.dln").write_text((REPO / "graphs" / "dln1.dln").read_text() +
                               '\nmodel default { backend = openai  model = "m"  base_url_env = "PLANT_URLS"'
                               '  api_key_env = "PLANT_KEY" }\nmodel other { backend = scripted }\n')
    args = ["fit", "net.dln", "--set", "fit.iters=1", "--set", "data.train_size=4", "--set", "data.dev_size=2",
            "--set", "data.test_size=2", "--data-dir", str(DATA), "--no-progress"]
    for env in ({}, {"PLANT_KEY": "  "}):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert main(args) == 1
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines[0].startswith("error[E630]: ") and "$PLANT_KEY" in lines[0], err
        assert lines[-1].startswith("hint: ") and len(lines) == 2, err
        assert not Path("runs").exists() or not any(Path("runs").iterdir())
    monkeypatch.delenv("PLANT_URLS")
    assert main(args) == 1
    assert "error[E620]: " in capsys.readouterr().err and not Path("runs").exists()


@pytest.mark.parametrize("key_env", ["MY_SERVICE_KEY", None])
def test_401_at_the_probe_is_e624_naming_the_key_variable(echo_server, monkeypatch, key_env):
    """A 401 during the capability probe used to be recorded as a missing capability and reported later as E628
    ("does not provide prompt log-probabilities") with a hint already applied."""
    from dlc.ir import ModelConfig
    from dlc.lm.registry import open_backend

    monkeypatch.setenv("OPENAI_BASE_URL", echo_server(401))
    monkeypatch.setenv(key_env or "OPENAI_API_KEY", KEY)
    cfg = ModelConfig(name="remote", backend="openai", model="m", api_key_env=key_env)
    with pytest.raises(DlcLMError) as e:
        open_backend(cfg).close()
    shown = _shown(e.value)
    assert e.value.code == "E624" and not _leaks(shown), shown
    assert f"${key_env or 'OPENAI_API_KEY'}" in e.value.hint and "'remote'" in e.value.hint

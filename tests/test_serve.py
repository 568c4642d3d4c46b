"""`dlc serve --model tiny --port 0` as a real subprocess (started and stopped by PID), driven by OpenAILM and by
raw HTTP: exact echo log-probs equal the embedded scorer's, generation equals the embedded backend's, and results
through the fault-injecting proxy equal a clean run's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from dlc.errors import DlcLMError
from dlc.lm.base import ChatPrompt, GenerateRequest, ScoreRequest
from dlc.lm.openai_backend import OpenAILM
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.model


def start_serve(*args: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start `dlc serve` and wait for its one `listening on URL` line."""
    env = {**os.environ, "DLC_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dlc", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"dlc serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split("listening on ", 1)[1].strip()


def stop(proc: subprocess.Popen) -> int:
    os.kill(proc.pid, signal.SIGTERM)
    return proc.wait(timeout=30)


@pytest.fixture(scope="module")
def serve():
    proc, url = start_serve("--model", "tiny", "--port", "0", "--n-ctx", "512")
    yield url
    assert stop(proc) == 0


@pytest.fixture(scope="module")
def embedded():
    from dlc.lm.embedded import EmbeddedLM

    lm = EmbeddedLM("tiny", n_ctx=512, n_threads=1)
    yield lm
    lm.close()


SCORES = [ScoreRequest("The capital of France is", " Paris"),
          ScoreRequest("Review: great movie!\nSentiment:", " positive"),
          ScoreRequest(ChatPrompt("Is the sky blue? Answer yes or no."), "yes"),
          ScoreRequest(ChatPrompt("Is the sky blue?", prefix="The answer is"), " yes")]
GENS = [GenerateRequest("Once upon a time", max_tokens=8, temperature=0.7, n=2, seed=5),
        GenerateRequest(ChatPrompt("Name a color."), max_tokens=6),
        GenerateRequest(ChatPrompt("Name a color.", prefix="My favourite color is"), max_tokens=6, stop=("\n",))]


def test_listening_line_and_echo_contract(serve):
    r = httpx.post(serve + "/completions", json={"model": "tiny", "prompt": "The capital of France is Paris",
                                                 "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0},
                   timeout=60).json()
    lp = r["choices"][0]["logprobs"]
    assert r["choices"][0]["text"].startswith("The capital of France is Paris")
    assert lp["token_logprobs"][0] is None and lp["tokens"][:2] == ["The", " capital"]
    i = lp["tokens"].index(" Paris")
    assert lp["text_offset"][i] == len("The capital of France is")
    assert abs(lp["token_logprobs"][i] - (-0.264)) < 0.01           # issue 3: exact value on SmolLM2
    m = httpx.get(serve + "/models", timeout=10).json()["data"][0]
    assert m["id"] == "tiny" and m["max_model_len"] == 512


def test_openai_client_scores_and_generates_like_embedded(serve, embedded):
    with OpenAILM("tiny", [serve], timeout=60) as lm:
        assert lm.capabilities.prompt_logprobs and lm.info.render == "apply-template"
        s, g = lm.score(SCORES), lm.generate(GENS)
    ref = embedded.score(SCORES)
    for a, b in zip(s, ref):
        assert a.tokens == b.tokens
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3
    assert [r.texts for r in g] == [r.texts for r in embedded.generate(GENS)]


def test_faulty_proxy_equals_clean_run(serve):
    with OpenAILM("tiny", [serve], timeout=60) as lm:
        clean_s, clean_g = lm.score(SCORES[:2]), lm.generate(GENS[:1])
    root = serve[: -len("/v1")]
    proxy = FaultProxy(root, ["500", "drop", "429", "garbage"], only_paths=("/completions",))
    try:
        with OpenAILM("tiny", [proxy.url + "/v1"], timeout=60, backoff_base=0.01, backoff_max=0.05) as lm:
            s, g = lm.score(SCORES[:2]), lm.generate(GENS[:1])
    finally:
        proxy.close()
    assert [r.logprobs for r in s] == [r.logprobs for r in clean_s]
    assert [r.texts for r in g] == [r.texts for r in clean_g]
    assert proxy.served["garbage"] > 0 and proxy.served["drop"] > 0


def test_errors_are_openai_shaped(serve):
    r = httpx.post(serve + "/completions", json={"model": "nope", "prompt": "x"}, timeout=30)
    assert r.status_code == 404 and "tiny" in r.json()["error"]["message"]
    r = httpx.post(serve + "/completions", json={"model": "tiny", "prompt": "x " * 600, "max_tokens": 4}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = httpx.post(serve + "/chat/completions", json={"model": "tiny", "messages": []}, timeout=30)
    assert r.status_code == 400
    with OpenAILM("tiny", [serve], timeout=60) as lm:
        with pytest.raises(DlcLMError) as ei:
            lm.generate([GenerateRequest("word " * 600, max_tokens=4)])
    assert ei.value.code == "E623" and "512" in ei.value.message


def test_port_in_use_is_a_clear_error(serve):
    port = serve.rsplit(":", 1)[1].split("/")[0]
    r = subprocess.run([sys.executable, "-m", "dlc", "serve", "--model", "tiny", "--port", port],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "E629" in r.stderr and "Traceback" not in r.stderr

"""OpenAILM against real HTTP servers on 127.0.0.1: `dlc.server.app` over a scripted model (transport, retries, replicas,
errors; fast) and through a fault-injecting proxy; exact scores against the embedded model are in test_serve.py."""
from __future__ import annotations

import math
import socket
import time

import pytest

from dlc.errors import DlcLMError
from dlc.lm.base import ChatPrompt, GenerateRequest, ScoreRequest
from dlc.lm.openai_backend import OpenAILM, align_continuation
from dlc.lm.openai_backend.probe import MalformedResponse
from tests.faultproxy import FaultProxy, ScriptedServable


def _root(url: str) -> str:
    return url[: -len("/v1")]


def _lm(urls, **kw) -> OpenAILM:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return OpenAILM("scripted", urls, **kw)


SCORES = [ScoreRequest("The capital of France is", " Paris"),
          ScoreRequest("The capital of France is", " Paris is big"),
          ScoreRequest(ChatPrompt("Is it good?", system="Be brief."), "yes"),
          ScoreRequest(ChatPrompt("Is it good?", prefix="The answer is"), " (A)"),
          ScoreRequest("x", "")]
GENS = [GenerateRequest("Once upon", max_tokens=5, temperature=0.7, n=3, seed=4),
        GenerateRequest(ChatPrompt("Name a color."), max_tokens=4),
        GenerateRequest(ChatPrompt("Name a color.", prefix="It is"), max_tokens=4, stop=("zz",))]


def _expected_scores() -> list[tuple[float, ...]]:
    s = ScriptedServable()
    out = []
    for r in SCORES:
        ctx = s.render(r.prompt) if isinstance(r.prompt, ChatPrompt) else r.prompt
        out.append(tuple(lp for tok, off, lp in s.echo(ctx + r.continuation) if off + len(tok) > len(ctx)))
    return out


def test_probe_records_capabilities(server):
    with _lm([server]) as lm:
        info = lm.info
        assert info.prompt_logprobs and info.completions and info.chat_completions
        assert info.render == "apply-template" and info.batch_prompts and info.n_per_request
        assert info.max_model_len == 256 and lm.capabilities.top_logprobs == 1
        assert "no-key" not in repr(lm) and lm.endpoint_report()[0]["info"]["model"] == "scripted"


def test_score_aligns_by_text_offset(server):
    with _lm([server], score_batch=2) as lm:
        res = lm.score(SCORES)
    assert [r.logprobs for r in res] == _expected_scores()
    assert res[4].logprobs == () and res[1].n_tokens == 3 and res[0].tokens == (" Paris",)


def test_generate_completions_and_chat(server):
    with _lm([server]) as lm:
        res = lm.generate(GENS)
    exp = ScriptedServable().generate(GENS)
    assert [r.texts for r in res] == [e.texts for e in exp]
    assert len(set(res[0].texts)) == 3 and lm.usage.calls == 3


def test_faults_recovered_results_equal_clean_run(server):
    with _lm([server]) as lm:
        clean_s, clean_g = lm.score(SCORES), lm.generate(GENS)
    proxy = FaultProxy(_root(server), ["500", "429", "drop", "garbage", "slow", "truncated", "empty"], slow_s=2.0)
    try:
        with _lm([proxy.url + "/v1"], timeout=1.0, max_retries=8) as lm:
            s, g = lm.score(SCORES), lm.generate(GENS)
        assert [r.logprobs for r in s] == [r.logprobs for r in clean_s]
        assert [r.texts for r in g] == [r.texts for r in clean_g]
        for kind in ("500", "429", "drop", "garbage", "slow", "truncated", "empty"):
            assert proxy.served[kind] > 0, kind
    finally:
        proxy.close()


def test_gives_up_after_max_retries_with_clear_error(server):
    with _lm([server]) as lm:
        proxy = FaultProxy(_root(server), ["500"] * 10, only_paths=("/completions",))
        try:
            lm2 = _lm([proxy.url + "/v1"], max_retries=2, probe=False)
            with pytest.raises(DlcLMError) as ei:
                lm2.score([ScoreRequest("a b", " c")])
            lm2.close()
        finally:
            proxy.close()
    assert ei.value.code == "E622" and "gave up after 3 attempts" in ei.value.message


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


def test_replica_down_does_not_stop(server):
    with _lm([_dead_url(), server]) as lm:
        assert [r.logprobs for r in lm.score(SCORES)] == _expected_scores()
        rep = lm.endpoint_report()
    assert rep[0]["info"] is None and rep[1]["requests"] > 0


def test_all_down_is_one_line_error():
    t = time.time()
    with pytest.raises(DlcLMError) as ei:
        _lm([_dead_url()])
    assert ei.value.code == "E621" and "cannot reach" in ei.value.message and time.time() - t < 10


def test_4xx_not_retried_context_too_long(server):
    proxy = FaultProxy(_root(server))
    try:
        with _lm([proxy.url + "/v1"]) as lm:
            before = sum(proxy.attempts.values())
            with pytest.raises(DlcLMError) as ei:
                lm.generate([GenerateRequest("word " * 300, max_tokens=10)])
            assert sum(proxy.attempts.values()) == before + 1          # no retry
    finally:
        proxy.close()
    assert ei.value.code == "E623" and "301 in the prompt" in ei.value.message and "256" in ei.value.message


def test_unknown_model_and_bad_config(server):
    with pytest.raises(DlcLMError) as ei:
        OpenAILM("scriptd", [server], timeout=5)
    assert ei.value.code == "E625" and "scripted" in (ei.value.hint or "")
    with pytest.raises(DlcLMError) as ei:
        OpenAILM("m", [])
    assert ei.value.code == "E620"


def test_requests_dlc_never_sends_have_their_own_codes(server):
    """max_tokens 0 (a server fills its context) or n 0: refused before sending, E631 (were E626, whose meaning is
    a request the *server* rejected); a continuation scored with no context before it is E643, as on the
    embedded backend."""
    lm = _lm([server])
    try:
        for req in (GenerateRequest("Once", max_tokens=0), GenerateRequest("Once", n=0)):
            with pytest.raises(DlcLMError) as ei:
                lm.generate([req])
            assert ei.value.code == "E631", ei.value
    finally:
        lm.close()
    choice = {"text": "ab", "logprobs": {"tokens": ["ab"], "token_logprobs": [None], "text_offset": [0]}}
    with pytest.raises(DlcLMError) as ei:
        align_continuation("ab", 0, choice)
    assert ei.value.code == "E643"


def test_missing_prompt_logprobs_is_named(server):
    """An endpoint without echo log-probs (proxy strips them): scoring names what is missing."""
    proxy = FaultProxy(_root(server))
    try:
        with _lm([proxy.url + "/v1"]) as lm:
            object.__setattr__(lm, "capabilities", type(lm.capabilities)(prompt_logprobs=False))
            with pytest.raises(DlcLMError) as ei:
                lm.score([ScoreRequest("a", " b")])
    finally:
        proxy.close()
    assert ei.value.code == "E628" and "log p(h" in ei.value.message


def test_concurrency_bound(server):
    """At most max_concurrency requests in flight per replica, and really concurrent (proxy delays each 0.3 s)."""
    proxy = FaultProxy(_root(server), ["slow"], slow_s=0.3, only_paths=("/completions",))
    try:
        with _lm([proxy.url + "/v1"], max_concurrency=3, probe=False) as lm:
            proxy.max_inflight = 0
            assert len(lm.generate([GenerateRequest(f"p{i}", max_tokens=2) for i in range(12)])) == 12
    finally:
        proxy.close()
    assert proxy.max_inflight == 3


def test_align_continuation_straddling_and_malformed():
    choice = {"text": "ab cd!", "logprobs": {"tokens": ["ab", " c", "d", "!"], "token_logprobs": [None, -1.0, -2.0, -3.0],
                                             "text_offset": [0, 2, 4, 5]}}
    r = align_continuation("ab cd", 3, choice)          # context "ab ", continuation "cd": " c" straddles
    assert r.logprobs == (-1.0, -2.0) and r.prompt_tokens == 1
    with pytest.raises(MalformedResponse):
        align_continuation("zz", 1, choice)
    bad = {"text": "ab cd", "logprobs": {"tokens": ["ab"], "token_logprobs": [None], "text_offset": [0, 2]}}
    with pytest.raises(MalformedResponse):
        align_continuation("ab cd", 2, bad)
    assert math.isfinite(r.logp_sum)


def test_registry_opens_openai_model_key_not_exposed(server, monkeypatch):
    import json

    from dlc.ir import ModelConfig
    from dlc.lm.registry import open_backend

    monkeypatch.setenv("DLC_TEST_URLS", f"{_dead_url()},{server}")
    monkeypatch.setenv("DLC_TEST_KEY", "sk-secret-123")
    lm = open_backend(ModelConfig(name="m", backend="openai", model="scripted", base_url_env="DLC_TEST_URLS",
                                  api_key_env="DLC_TEST_KEY", timeout=5.0))
    try:
        assert isinstance(lm, OpenAILM) and len(lm.base_urls) == 2
        assert lm.score([ScoreRequest("The capital of France is", " Paris")])[0].logprobs == _expected_scores()[0]
        shown = repr(lm) + json.dumps(lm.endpoint_report()) + json.dumps(lm.info.to_json()) + lm.model_id
        assert "sk-secret" not in shown
    finally:
        lm.close()


def test_replica_dies_mid_run_fails_over(server):
    a, b = FaultProxy(_root(server)), FaultProxy(_root(server))
    try:
        with _lm([a.url + "/v1", b.url + "/v1"], max_retries=3) as lm:
            a.faults = ["drop"] * 100                        # replica A stops answering after the probe
            reqs = [ScoreRequest(f"context number {i} is", " here") for i in range(10)] + SCORES
            res = lm.score(reqs)
            rep = lm.endpoint_report()
        assert [r.logprobs for r in res[10:]] == _expected_scores()
        assert a.served["drop"] >= 1 and rep[1]["requests"] > rep[0]["requests"]
    finally:
        a.close()
        b.close()


def test_replica_back_after_start_is_probed_then_used(server):
    a = FaultProxy(_root(server), ["drop"] * 100)
    try:
        with _lm([a.url + "/v1", server]) as lm:
            assert lm.endpoint_report()[0]["info"] is None      # down during the probe
            a.faults = []
            time.sleep(max(0.0, lm._endpoints[0].down_until - time.monotonic()) + 0.05)
            res = lm.score([ScoreRequest(f"context {i} is", " here") for i in range(6)] + SCORES)
            rep = lm.endpoint_report()
        assert [r.logprobs for r in res[6:]] == _expected_scores()
        assert rep[0]["info"] is not None and rep[0]["excluded"] is None and rep[0]["requests"] > 0
    finally:
        a.close()

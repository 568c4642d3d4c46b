"""CachedLM: whole-request keys, hits/misses, accounting per tag, the token budget, and the real tiny model."""
from __future__ import annotations

import pytest

from dlc.errors import DlcFitError
from dlc.ir import ModelConfig
from dlc.lm.base import ChatPrompt, GenerateRequest, ScoreRequest
from dlc.lm.cache import DiskCache
from dlc.lm.cached import Budget, CachedLM
from dlc.lm.registry import open_lm
from dlc.lm.scripted import ScriptedLM


def _lm(tmp_path, **kw):
    inner = ScriptedLM()
    return inner, CachedLM(inner, DiskCache(tmp_path), **kw)


def test_second_call_is_a_hit_and_tags_are_not_in_the_key(tmp_path):
    inner, lm = _lm(tmp_path)
    reqs = [ScoreRequest("Review: good.", " positive", tag="out"), ScoreRequest("Review: good.", " negative",
                                                                                 tag="out")]
    first = lm.score(reqs)
    again = lm.score([ScoreRequest(r.prompt, r.continuation, tag="other") for r in reqs])
    assert [r.logprobs for r in first] == [r.logprobs for r in again]
    assert not any(r.cached for r in first) and all(r.cached for r in again)
    assert len(inner.calls) == 2                                   # the model saw each request once
    assert lm.usage.calls == 2 and lm.usage.cache_hits == 2
    assert lm.usage.per_tag["out"]["calls"] == 2 and lm.usage.per_tag["other"]["cache_hits"] == 2
    assert lm.usage.per_tag["other"]["prompt_tokens"] == 0        # hits cost nothing


def test_generate_key_covers_sampling_parameters(tmp_path):
    inner, lm = _lm(tmp_path)
    base = GenerateRequest(ChatPrompt("Propose a prompt."), max_tokens=20, temperature=0.7, n=2, seed=1, tag="h")
    lm.generate([base])
    variants = [GenerateRequest(base.prompt, max_tokens=21, temperature=0.7, n=2, seed=1),
                GenerateRequest(base.prompt, max_tokens=20, temperature=0.8, n=2, seed=1),
                GenerateRequest(base.prompt, max_tokens=20, temperature=0.7, n=3, seed=1),
                GenerateRequest(base.prompt, max_tokens=20, temperature=0.7, n=2, seed=2),
                GenerateRequest(base.prompt, max_tokens=20, temperature=0.7, n=2, seed=1, stop=("\n",)),
                GenerateRequest(base.prompt, max_tokens=20, temperature=0.7, n=2, seed=1, top_p=0.9),
                GenerateRequest(ChatPrompt("Propose a prompt.", system="S"), max_tokens=20, temperature=0.7, n=2,
                                seed=1),
                GenerateRequest(ChatPrompt("Propose a prompt.", prefix="P"), max_tokens=20, temperature=0.7,
                                n=2, seed=1),
                GenerateRequest("Propose a prompt.", max_tokens=20, temperature=0.7, n=2, seed=1)]
    res = lm.generate(variants)
    assert not any(r.cached for r in res) and len(inner.calls) == 1 + len(variants)
    hit = lm.generate([GenerateRequest(base.prompt, max_tokens=20, temperature=0.7, n=2, seed=1, tag="x")])[0]
    assert hit.cached and len(hit.texts) == 2 and lm.usage.cache_hits == 1


def test_models_do_not_share_entries(tmp_path):
    cache = DiskCache(tmp_path)
    a = CachedLM(ScriptedLM(model_id="embedded:a@1"), cache)
    b = CachedLM(ScriptedLM(model_id="embedded:a@2"), cache)
    a.score([ScoreRequest("x", " y")])
    assert not b.score([ScoreRequest("x", " y")])[0].cached


def test_no_cache_still_counts(tmp_path):
    inner = ScriptedLM()
    lm = CachedLM(inner, None)
    lm.score([ScoreRequest("x", " y", tag="t")])
    lm.score([ScoreRequest("x", " y", tag="t")])
    assert len(inner.calls) == 2 and lm.usage.cache_hits == 0 and lm.usage.per_tag["t"]["calls"] == 2


def test_budget_stops_uncached_calls_but_not_hits(tmp_path):
    budget = Budget(10)
    inner, lm = _lm(tmp_path, budget=budget)
    req = GenerateRequest("one two three four five six", max_tokens=8, tag="l")
    lm.generate([req])                                   # 6 prompt + >=1 completion tokens
    lm.generate([GenerateRequest("seven eight nine ten", max_tokens=8)])
    assert budget.exhausted and budget.spent == lm.usage.prompt_tokens + lm.usage.completion_tokens
    with pytest.raises(DlcFitError) as e:
        lm.score([ScoreRequest("new", " request")])
    assert e.value.code == "E730" and "budget" in e.value.message
    assert lm.generate([req])[0].cached                  # cached answers are free


@pytest.mark.model
def test_open_lm_tiny_cache_roundtrip(tmp_path):
    cfg = ModelConfig(name="fwd", backend="embedded", model="tiny", n_ctx=256)
    lm = open_lm(cfg, cache_dir=tmp_path)
    try:
        reqs = [ScoreRequest(ChatPrompt("2+2?", prefix="The answer is "), c, tag="out") for c in ("4", "5")]
        gen = GenerateRequest(ChatPrompt("Say hi."), max_tokens=4, temperature=0.7, seed=3, tag="h")
        s1, g1 = lm.score(reqs), lm.generate([gen])
        s2, g2 = lm.score(reqs), lm.generate([gen])
        assert [r.logprobs for r in s1] == [r.logprobs for r in s2] and g1[0].texts == g2[0].texts
        assert all(r.cached for r in s2) and g2[0].cached
        assert lm.usage.per_tag["out"] == {"calls": 2, "prompt_tokens": s1[0].prompt_tokens * 2 + s1[0].n_tokens
                                           + s1[1].n_tokens, "completion_tokens": 0, "cache_hits": 2}
        # the rendered chat text is in the key: another system message is another entry
        other = lm.score([ScoreRequest(ChatPrompt("2+2?", system="Be brief.", prefix="The answer is "), "4")])
        assert not other[0].cached
        assert lm.render(ChatPrompt("x")).startswith("<|im_start|>system")     # backend extras pass through
    finally:
        lm.close()
    lm2 = open_lm(cfg, cache_dir=tmp_path, no_cache=True)
    try:
        assert lm2.cache is None and not lm2.score(reqs[:1])[0].cached
    finally:
        lm2.close()


def test_merged_scores_are_other_cache_entries_than_exact_ones(tmp_path):
    """A backend in merged mode (`scoring = merged`: several prompts per decode, one unified KV stream) gives scores,
    and sampled texts, within batch-shape noise of the exact mode's, not equal to them: its results must not be
    served to an exact run, nor the reverse."""
    exact, lm_exact = _lm(tmp_path / "a")
    merged, lm_merged = _lm(tmp_path / "b")
    merged.exact = False                      # what EmbeddedLM(exact=False) exposes
    lm_merged = CachedLM(merged, DiskCache(tmp_path / "b2"))
    r = ScoreRequest("Review: good.", " positive")
    g = GenerateRequest("Say hi.", max_tokens=3)
    assert lm_exact.score_key(r) != lm_merged.score_key(r)
    assert lm_exact.generate_key(g) != lm_merged.generate_key(g)
    plain = CachedLM(ScriptedLM(), None)
    assert (lm_exact.score_key(r), lm_exact.generate_key(g)) == (plain.score_key(r), plain.generate_key(g))

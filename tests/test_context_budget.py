"""Context budgeting (issue 17, engine 7): a proposal or posterior prompt longer than the model's context shows fewer
examples / clipped texts instead of aborting the fit, records what it cut, and fails (E641) only when even the
smallest version does not fit. A scripted LM with a character "context" stands in for the backend's check, and one
test runs the real embedded tiny model with a small n_ctx."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import pytest

from dlc.engine.budget import clip_limit, clip_text
from dlc.engine.forward import forward
from dlc.engine.hidden import infer_hidden
from dlc.engine.prompts import layer_view, propose
from dlc.errors import DlcLMError
from dlc.ir import Example
from dlc.lang.compiler import compile_file
from dlc.lm.base import GenerateRequest, GenerateResult
from dlc.lm.scripted import ScriptedLM, prompt_text
from dlc.rng import Rng

from conftest import REPO


class SmallContextLM(ScriptedLM):
    """Refuses (E641, as the embedded backend does, before generating anything) a batch holding a prompt of more
    than `limit` characters."""

    limit: int = 10**9
    refused: int = 0

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        for r in requests:
            if len(prompt_text(r.prompt)) > self.limit:
                self.refused += 1
                raise DlcLMError(f"the prompt needs {len(prompt_text(r.prompt))} tokens but the context holds "
                                 f"{self.limit}", code="E641", hint="raise n_ctx")
        return super().generate(requests)


def lm(limit: int) -> SmallContextLM:
    m = SmallContextLM(generate_fn=lambda p, r, i: "Classify the sentence carefully. [END]")
    m.limit = limit
    return m


def graph(name: str):
    return compile_file(REPO / "graphs" / f"{name}.dln")


def examples(n: int, words: int) -> list[Example]:
    return [Example(inputs={"x": f"s{i} " + " ".join(f"w{i}_{j}" for j in range(words))},
                    target=("subjective", "objective")[i % 2], id=f"s{i}") for i in range(n)]


def test_clip_helpers():
    assert clip_text("short", 10) == "short"
    t = clip_text("alpha beta gamma delta epsilon", 17)
    assert t == "alpha beta gamma [...]"
    assert clip_limit(["x" * 1000, "y"], 1) == 500 and clip_limit(["x" * 1000], 3) == 125
    assert clip_limit(["x" * 1000], 4) is None            # 62 < 64 characters: nothing left worth showing


def test_over_long_proposal_prompt_shows_fewer_examples():
    g = graph("dln1")
    ex = examples(8, 60)                        # ~480 characters per example
    tr = forward(g, g.prompts(), {"default": lm(10**9)}, ex)
    view = layer_view(g, "y", tr, {}, False)
    cfg = dataclasses.replace(g.fit, num_p_samples=3, held_out_prompt_ranking=False)
    # everything fits: exactly as before, one batched call, all 8 examples shown
    full = lm(10**9)
    cands, recs = propose(g, "y", g.prompts()["y"], [], view, {"default": full}, cfg, Rng(1), 0)
    assert [len(r["shown"]) for r in recs] == [8, 8] and not any("shown_all" in r for r in recs)
    assert full.batches == [("generate", "y/propose", 2)]
    # a context that holds a few examples: each proposal shows the first half, then a quarter ... (recorded)
    small = lm(3000)
    cands2, recs2 = propose(g, "y", g.prompts()["y"], [], view, {"default": small}, cfg, Rng(1), 0)
    assert small.refused >= 1
    for r, r_full in zip(recs2, recs):
        k = len(r["shown"])
        assert k in (1, 2, 4) and r["shown_all"] == r_full["shown"] and r["shown"] == r_full["shown"][:k]
        assert r["context_budget"] == f"{k} of 8 examples shown (context)"
    sent = [c.prompt for c in small.calls if c.tag == "y/propose"]
    assert len(sent) == 2 and all(len(p) <= 3000 for p in sent)
    assert "Classify the sentence carefully." in cands2            # the proposals were made
    # not even one example fits: the context error, saying so
    with pytest.raises(DlcLMError) as ei:
        propose(g, "y", g.prompts()["y"], [], view, {"default": lm(300)}, cfg, Rng(1), 0)
    assert ei.value.code == "E641" and "one example shown" in ei.value.message and ei.value.node == "y"


def test_over_long_posterior_prompt_clips_its_texts():
    g = graph("dln2")
    g = dataclasses.replace(g, fit=dataclasses.replace(g.fit, num_h_samples=2))
    ex = examples(2, 400)                       # ~3,600 characters of input per example
    long_h = " ".join(["step"] * 400)

    def gen(p: str, r, i: int) -> str:
        return long_h if r.tag == "h/forward" else "short reasoning"

    tr = forward(g, g.prompts(), {"default": SmallContextLM(generate_fn=gen)}, ex)
    m = SmallContextLM(generate_fn=gen)
    m.limit = 2700                              # every posterior prompt is longer (2,719-2,825 characters)
    post = infer_hidden(g, g.prompts(), {"default": m}, tr, g.fit, Rng(g.fit.seed), 0)["h"]
    assert m.refused >= 1
    assert post.clipped and set(post.clipped) == {"0,0", "0,1", "1,0", "1,1"}
    assert all(v < 3600 for v in post.clipped.values())
    assert post.samples == [["short reasoning"] * 2] * 2
    assert post.to_json()["clipped"] == post.clipped
    sent = [c.prompt for c in m.calls if c.tag == "h/posterior"]
    assert sent and all(len(p) <= 3000 and "[...]" in p for p in sent)
    # the same prompts fit a larger context: nothing clipped, nothing recorded
    big = SmallContextLM(generate_fn=gen)
    post2 = infer_hidden(g, g.prompts(), {"default": big}, tr, g.fit, Rng(g.fit.seed), 0)["h"]
    assert post2.clipped == {} and "clipped" not in post2.to_json()
    # a context too small for the template itself: the context error
    tiny = SmallContextLM(generate_fn=gen)
    tiny.limit = 100
    with pytest.raises(DlcLMError) as ei:
        infer_hidden(g, g.prompts(), {"default": tiny}, tr, g.fit, Rng(g.fit.seed), 0)
    assert ei.value.code == "E641" and "clipped" in ei.value.message

"""Hidden-text inference (Alg. 3) on the real graphs with scripted LMs: proposals, weights, targets."""
from __future__ import annotations

import dataclasses
import math
import re

import pytest

from dlc.engine.hidden import infer_hidden
from dlc.lang.compiler import compile_file, compile_source
from dlc.engine.forward import forward, layer_context
from dlc.ir import Example, PosteriorComponent
from dlc.engine.labels import label_logdists
from dlc.lm.scripted import ScriptedLM
from dlc.rng import Rng

from conftest import REPO as ROOT
TRUTH = ("subjective", "objective")


def graph(name: str):
    return compile_file(ROOT / "graphs" / f"{name}.dln")


def examples(n: int) -> list[Example]:
    return [Example(inputs={"x": f"s{i} text"}, target=TRUTH[i % 2], id=f"s{i}") for i in range(n)]


def reasoning_lm() -> ScriptedLM:
    """Greedy forward reasoning is bad; reasoning sampled knowing the answer is good; the output layer is right
    exactly when it reads good reasoning."""
    def gen(prompt: str, req, i: int) -> str:
        return "good reasoning" if "correct final answer" in prompt else "bad reasoning"

    def score(prompt: str, cont: str) -> float:
        if cont.lower() in TRUTH:
            m = re.search(r"s(\d+) text", prompt)
            if m is None:                                  # MI term: the output layer without x
                return -1.0
            idx = int(m.group(1))
            right = cont.lower() == TRUTH[idx % 2]
            return -0.2 if right == ("good reasoning" in prompt) else -4.0
        return -1.0 if cont == "bad reasoning" else -2.0   # prior, two words each: mean -0.5 / -1.0
    return ScriptedLM(generate_fn=gen, score_fn=score)


def cfg(g, **kw):
    return dataclasses.replace(g.fit, **kw)


def only(g, node, name):
    """The graph with `node`'s posterior reduced to the component `name`."""
    lay = g.layers[node]
    comp = next(c for c in lay.backward.posterior if c.template.name == name)
    back = dataclasses.replace(lay.backward, posterior=(PosteriorComponent(comp.template, 1.0),))
    return dataclasses.replace(g, layers=dict(g.layers, **{node: dataclasses.replace(lay, backward=back)}))


def test_dln2_weights_hand_computed():
    """Posterior sharpening (dln-reference §1.4 step 4, defaults include_prior, no correct_weighting):
    logit_k = log p~(y | x, h_k, π1) + log p(h_k | x, π0) [mean per token], w = softmax_k(logit). The two samples
    differ: "good reasoning" explains the label (child -log(1+e^-3.8)) but is less likely a priori (mean -1.0),
    "fair reasoning" explains it less (-log(1+e^-0.5)) and is likelier (mean -0.5); the prior tips the balance."""
    g = only(graph("dln2"), "h", "prior_answer")
    flip = iter(range(10**6))

    def gen(prompt: str, req, i: int) -> str:
        if "correct final answer" in prompt:
            return "good reasoning" if next(flip) % 2 == 0 else "fair reasoning"
        return "bad reasoning"

    def score(prompt: str, cont: str) -> float:
        if cont.lower() in TRUTH:
            right = cont.lower() == TRUTH[int(re.search(r"s(\d+) text", prompt).group(1)) % 2]
            if "good reasoning" in prompt:
                return -0.2 if right else -4.0
            if "fair reasoning" in prompt:
                return -1.0 if right else -1.5
            return -4.0 if right else -0.2
        return {"good reasoning": -2.0, "fair reasoning": -1.0}.get(cont, -3.0)   # two tokens each
    lm = ScriptedLM(generate_fn=gen, score_fn=score)
    ex = examples(2)
    c = cfg(g, num_h_samples=2)
    tr = forward(g, g.prompts(), {"default": lm}, ex)
    assert tr.texts["h"] == ["bad reasoning"] * 2 and tr.correct == [False, False]
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(c.seed), 0)["h"]
    assert post.samples == [["good reasoning", "fair reasoning"]] * 2
    child = [-math.log1p(math.exp(-3.8)), -math.log1p(math.exp(-0.5))]
    prior = [-1.0, -0.5]
    logits = [child[0] + prior[0], child[1] + prior[1]]
    z = math.exp(logits[0]) + math.exp(logits[1])
    for i in range(2):
        assert post.logp_children[i] == pytest.approx(child)
        assert post.logp_prior[i] == pytest.approx(prior)
        assert post.logits[i] == pytest.approx(logits)
        assert post.weights[i] == pytest.approx([math.exp(logits[0]) / z, math.exp(logits[1]) / z])
    assert post.best == ["fair reasoning"] * 2                  # without the prior "good reasoning" would win
    lp = [c_ for c_ in lm.calls if c_.tag == "h/posterior"]
    assert len(lp) == 4 and all(c_.temperature == c.bwd_temp for c_ in lp)
    assert "The correct final answer to the following is known: subjective" in lp[0].prompt
    assert lp[0].seed == Rng(c.seed).seed_for("iter", 0, "node", "h", "posterior", 0, 0)


def test_posterior_samples_are_capped_at_the_layer_s_own_max_tokens():
    """A posterior sample h~ stands for a hidden text of its layer: by default it gets the layer's `max_tokens` (128
    in graphs/dln2.dln, as its forward texts do), not the backward proposals' 512; `backward.posterior_max_tokens`
    sets it apart. Prompt proposals keep `backward.max_tokens`."""
    g = graph("dln2")
    ex = examples(2)
    c = cfg(g, num_h_samples=2)
    for cap, want in ((0, 128), (300, 300)):
        lay = g.layers["h"]
        gg = dataclasses.replace(g, layers=dict(g.layers, h=dataclasses.replace(
            lay, backward=dataclasses.replace(lay.backward, posterior_max_tokens=cap))))
        lm = reasoning_lm()
        tr = forward(gg, gg.prompts(), {"default": lm}, ex)
        infer_hidden(gg, gg.prompts(), {"default": lm}, tr, c, Rng(c.seed), 0)
        fwd = [x for x in lm.calls if x.tag == "h/forward"]
        post = [x for x in lm.calls if x.tag == "h/posterior"]
        assert fwd and {x.max_tokens for x in fwd} == {128} and gg.layers["h"].backward.max_tokens == 512
        assert len(post) == 4 and {x.max_tokens for x in post} == {want}


def test_posterior_samples_end_at_the_layer_s_own_stop_too():
    """A forward text of a hidden layer ends at the layer's `stop`; a posterior sample standing for one does too
    (besides the backward stop "[END]"), so the child is not scored on text the forward pass never produces."""
    g = graph("dln2")
    lay = g.layers["h"]
    gg = dataclasses.replace(g, layers=dict(g.layers, h=dataclasses.replace(
        lay, generation=dataclasses.replace(lay.generation, stop=("\nSo",)))))

    def gen(prompt: str, req, i: int) -> str:
        return "good reasoning\nSo the answer is known" if "correct final answer" in prompt else "bad reasoning"
    lm = ScriptedLM(generate_fn=gen, score_fn=reasoning_lm().score_fn)
    c = cfg(gg, num_h_samples=2)
    tr = forward(gg, gg.prompts(), {"default": lm}, examples(2))
    post = infer_hidden(gg, gg.prompts(), {"default": lm}, tr, c, Rng(c.seed), 0)["h"]
    assert any("prior_answer" == t for ts in post.templates for t in ts)
    for ts, ss in zip(post.templates, post.samples):
        for t, s in zip(ts, ss):
            assert s.strip() == ("good reasoning" if t == "prior_answer" else "bad reasoning")
    assert gg.layers["h"].posterior_stop() == ("[END]", "\nSo") and g.layers["h"].posterior_stop() == ("[END]",)
    # `backward.posterior_layer_stop = false` (what artifacts from before the switch load with): backward.stop only
    off = dataclasses.replace(gg, layers=dict(gg.layers, h=dataclasses.replace(
        gg.layers["h"], backward=dataclasses.replace(gg.layers["h"].backward, posterior_layer_stop=False))))
    post = infer_hidden(off, off.prompts(), {"default": lm}, tr, c, Rng(c.seed), 0)["h"]
    assert any("\nSo the answer is known" in s for ss in post.samples for s in ss)


def test_dln2_mixture_choice_is_seeded_and_weights_follow_eq3():
    g = graph("dln2")
    lm = reasoning_lm()
    c = cfg(g, num_h_samples=4)
    tr = forward(g, g.prompts(), {"default": lm}, examples(3))
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(c.seed), 5)["h"]
    comps = g.layers["h"].backward.posterior
    good_l = -math.log1p(math.exp(-3.8)) - 1.0
    bad_l = -3.8 - math.log1p(math.exp(-3.8)) - 0.5
    for i in range(3):
        for k in range(4):
            want = Rng(c.seed).derive("iter", 5, "node", "h", "posterior", i, k).choices(
                comps, weights=[x.weight for x in comps])[0].template.name
            assert post.templates[i][k] == want
            assert post.samples[i][k] == ("good reasoning" if want == "prior_answer" else "bad reasoning")
        logits = [good_l if s == "good reasoning" else bad_l for s in post.samples[i]]
        assert post.logits[i] == pytest.approx(logits)
        z = sum(math.exp(v) for v in logits)
        assert post.weights[i] == pytest.approx([math.exp(v) / z for v in logits])


def test_prior_is_scored_with_the_forward_context_even_with_strip_options():
    g = graph("dln2")
    lm = reasoning_lm()
    ex = [Example({"x": "s1 text\nOptions:\n(A) x"}, "objective", "a")]
    c = cfg(g, num_h_samples=1, strip_options_for_hidden=True)
    tr = forward(g, g.prompts(), {"default": lm}, ex, strip_hidden_options=True)
    assert "Options:" not in tr.nodes["h"].contexts[0].user and "Options:" in tr.nodes["y"].contexts[0].user
    infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(1), 0)
    prior = [x for x in lm.calls if x.tag == "h/posterior_prior"]
    weight = [x for x in lm.calls if x.tag == "y/posterior_weight"]
    assert prior and all("Options:" not in x.prompt for x in prior)
    assert weight and all("Options:" in x.prompt for x in weight)   # never the stripped x for layer 2 (§6.2.2)


def test_sharpening_options_add_their_terms_and_calls():
    """include_prior off, correct_weighting and mi_regularization on (dln-reference §1.4 step 4):
    logit = log p~(y | x, h, π1) − log q(h) − log p~(y | h, π1), each term computed here from the scripted
    log-probs: child -log(1+e^-3.8); log q = mean per token of the sample under its posterior prompt (-3 over two
    tokens: -1.5); the MI term scores y with x left out (right label -0.5, wrong -1.5: -log(1+e^-1))."""
    g = only(graph("dln2"), "h", "prior_answer")

    def score(prompt: str, cont: str) -> float:
        if cont.lower() in TRUTH:
            m = re.search(r"s(\d+) text", prompt)
            if m is None:                                  # MI term: the output layer without x
                return -0.5 if cont.lower() == "subjective" else -1.5
            right = cont.lower() == TRUTH[int(m.group(1)) % 2]
            return -0.2 if right == ("good reasoning" in prompt) else -4.0
        if "correct final answer" in prompt:               # log q: the sample under its posterior prompt
            return -3.0
        return -1.0                                        # prior: not asked for
    lm = ScriptedLM(generate_fn=lambda p, r, i: "good reasoning" if "correct final answer" in p else "bad reasoning",
                    score_fn=score)
    c = cfg(g, num_h_samples=1, include_prior=False, correct_weighting=True, mi_regularization=True)
    tr = forward(g, g.prompts(), {"default": lm}, examples(1))
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(1), 0)["h"]
    tags = {x.tag for x in lm.calls}
    assert {"h/posterior_q", "y/posterior_mi"} <= tags and "h/posterior_prior" not in tags
    assert post.logp_prior is None
    assert all("s0 text" not in x.prompt for x in lm.calls if x.tag == "y/posterior_mi")
    child, logq, mi = -math.log1p(math.exp(-3.8)), -1.5, -math.log1p(math.exp(-1.0))
    assert post.logp_children[0] == pytest.approx([child])
    assert post.logq[0] == pytest.approx([logq]) and post.logp_mi[0] == pytest.approx([mi])
    assert post.logits[0] == pytest.approx([child - logq - mi])


def test_rewrite_loss_only_and_h_argmax():
    g = only(graph("dln2"), "h", "prior_answer")
    # the output layer is right on example 0 only
    lm = ScriptedLM(generate_fn=lambda p, r, i: "good reasoning" if "correct final" in p else "bad reasoning",
                    score_fn=lambda p, c: -0.1 if (c.lower() == "subjective") else -3.0)
    c = cfg(g, num_h_samples=3, rewrite_loss_only=True, use_h_argmax=True)
    tr = forward(g, g.prompts(), {"default": lm}, examples(2))
    assert tr.correct == [True, False]
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(1), 0)["h"]
    assert post.resampled == [False, True]
    assert post.samples == [["bad reasoning"], [post.best[1]]] and post.weights == [[1.0], [1.0]]
    assert sum(1 for x in lm.calls if x.tag == "h/posterior") == 3      # only the wrong example


def test_deep3_targets_propagate_top_down():
    g = graph("deep3")
    lm = ScriptedLM()
    c = cfg(g, num_h_samples=2)
    tr = forward(g, g.prompts(), {"default": lm}, examples(2))
    posts = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(3), 0)
    assert list(posts) == ["reasoning", "analysis"]                      # reverse topological order
    # analysis is weighted by how well each sample predicts reasoning's h* under reasoning's prompt
    calls = [x for x in lm.calls if x.tag == "reasoning/posterior_weight"]
    assert {x.continuation for x in calls} == set(posts["reasoning"].best)
    for i in range(2):
        best = posts["reasoning"].best[i]
        q = [x for x in lm.calls if x.tag == "analysis/posterior"][i * 2]
        if "correct final answer" in q.prompt:
            assert best in q.prompt                                         # the child's target, not the label
        assert posts["reasoning"].best[i] == posts["reasoning"].samples[i][
            max(range(2), key=lambda k: (posts["reasoning"].weights[i][k], -k))]


MULTI = """
network multi
input x
layer h(x) { template = step_by_step  prompt = "" }
layer a(h) { template = brief_analysis  prompt = "Summarise." }
layer y(x, h, a) {
  template = residual
  prompt = "Decide."
  output = choice { subjective: "subjective", objective: "objective" }
}
output y
"""


def test_several_children_sum_their_log_likelihoods():
    g = compile_source(MULTI)
    assert g.children("h") == ("a", "y")
    lm = ScriptedLM()
    c = cfg(g, num_h_samples=2, include_prior=False)
    ex = examples(1)
    tr = forward(g, g.prompts(), {"default": lm}, ex)
    posts = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(9), 0)
    h_post, a_star = posts["h"], posts["a"].best[0]
    assert a_star != tr.texts["a"][0]
    for k, h in enumerate(h_post.samples[0]):
        # y reads h's sample and a's h* (a was visited first), as in the chain h -> a* -> y
        texts = dict(tr.example_texts(0), h=h, a=a_star)
        [dist] = label_logdists(lm, [layer_context(g, g.layers["y"], "Decide.", texts)], g.layers["y"].output.labels)
        ctx_a = layer_context(g, g.layers["a"], "Summarise.", texts)
        lp_a = lm.score([__import__("dlc.lm.base", fromlist=["x"]).ScoreRequest(ctx_a, a_star)])[0].logp_mean
        assert h_post.logp_children[0][k] == pytest.approx(dist[ex[0].target == "objective"] + lp_a)


MULTI_GEN = """
network multigen
input x
layer h(x) { template = step_by_step  prompt = "" }
layer a(h) { template = brief_analysis  prompt = "Summarise." }
layer y(x, h, a) { template = residual  prompt = "Solve."  output = number }
output y
"""


def test_accuracy_scoring_adds_a_generative_output_to_the_other_children():
    """Issue 17, engine 3: with output_scoring = accuracy and a generative output, h's logit is log p(a* | h) + the
    0/1 correctness of y given h: the output's term is added to the other child's, not written over it."""
    from dlc.lm.base import ScoreRequest
    g = compile_source(MULTI_GEN)
    assert g.children("h") == ("a", "y") and g.layers["y"].output.kind == "number"
    flip = iter(range(10**6))

    def gen(prompt: str, req, i: int) -> str | None:
        if req.tag.startswith("y/"):
            return "Total: 1,234,000 units." if "good" in prompt else "Total: 5 units."
        if req.tag == "h/posterior":
            return f"good plan {next(flip)}" if next(flip) % 4 == 0 else f"bad plan {next(flip)}"
        return None
    lm = ScriptedLM(generate_fn=gen)
    c = cfg(g, num_h_samples=4, output_scoring="accuracy", include_prior=False)
    ex = [Example(inputs={"x": "q0 text"}, target="1234000", id="q0")]
    tr = forward(g, g.prompts(), {"default": lm}, ex)
    assert tr.correct == [False]
    posts = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(5), 0)
    h_post, a_star = posts["h"], posts["a"].best[0]
    good = ["good" in h for h in h_post.samples[0]]
    assert any(good) and not all(good)
    for k, h in enumerate(h_post.samples[0]):
        ctx_a = layer_context(g, g.layers["a"], "Summarise.", dict(tr.example_texts(0), h=h))
        lp_a = lm.score([ScoreRequest(ctx_a, a_star)])[0].logp_mean
        assert lp_a < -0.01
        assert h_post.logp_children[0][k] == pytest.approx(lp_a + (1.0 if good[k] else 0.0))
    # the generative output is judged by its answer, not scored: no y/posterior_weight score call
    assert not [x for x in lm.calls if x.kind == "score" and x.tag == "y/posterior_weight"]


def empty_lm() -> ScriptedLM:
    """The forward h is empty; posterior samples alternate empty / "some reasoning"; the output layer's label
    log-probs do not depend on h; an empty continuation has no token (as on the real backends)."""
    flip = iter(range(10**6))

    def gen(prompt: str, req, i: int) -> str:
        if req.tag == "h/posterior":
            return "" if next(flip) % 2 == 0 else "some reasoning"
        return ""

    def score(prompt: str, cont: str):
        if cont == "":
            return []
        if cont.lower() in TRUTH:
            return -0.5 if cont.lower() == "subjective" else -1.5
        return -1.0                                          # two tokens: mean -0.5
    return ScriptedLM(generate_fn=gen, score_fn=score)


@pytest.mark.parametrize("terms", [dict(include_prior=True), dict(include_prior=False, correct_weighting=True)])
def test_empty_hidden_sample_is_excluded_not_the_most_likely(terms):
    """Issue 17, engine 4: log p("") is not a mean over zero tokens (= 0, the highest prior there is): an empty
    sample gets weight 0 when the logit has a log p(h) or log q(h) term, and is never scored."""
    g = only(graph("dln2"), "h", "prior_answer")
    lm = empty_lm()
    c = cfg(g, num_h_samples=4, rewrite_loss_only=False, **terms)
    tr = forward(g, g.prompts(), {"default": lm}, examples(1))
    assert tr.texts["h"] == [""]
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(1), 0)["h"]
    assert post.samples[0] == ["", "some reasoning", "", "some reasoning"]
    assert post.best == ["some reasoning"]
    assert post.weights[0] == pytest.approx([0.0, 0.5, 0.0, 0.5])
    assert post.logits[0][0] == float("-inf")
    if c.include_prior:
        assert post.logp_prior[0] == pytest.approx([float("-inf"), -0.5, float("-inf"), -0.5])
    assert not [x for x in lm.calls if x.kind == "score" and x.continuation == ""]


def test_empty_hidden_sample_without_prior_is_weighted_by_its_children():
    g = only(graph("dln2"), "h", "prior_answer")
    lm = empty_lm()
    c = cfg(g, num_h_samples=2, rewrite_loss_only=False, include_prior=False, correct_weighting=False)
    tr = forward(g, g.prompts(), {"default": lm}, examples(1))
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(1), 0)["h"]
    assert post.samples[0] == ["", "some reasoning"] and post.weights[0] == pytest.approx([0.5, 0.5])

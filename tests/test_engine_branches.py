"""Engine branches that change the numbers (issue 17, engine 8), each checked against values worked out by hand from
the reference's equations (dln-reference §1.2-§1.4) on the scripted LM. Every input is chosen so that the branch
changes the result: use_nce reverses a ranking, label_agg = max and output_logp = mean flip an argmax, accuracy mode
replaces log-likelihoods by 0/1 and drops the prior, a hidden choice layer's samples are labels."""
from __future__ import annotations

import dataclasses
import math

import pytest

from dlc.engine.forward import forward
from dlc.engine.hidden import Posterior, infer_hidden, score_opts
from dlc.engine.prompts import score_candidates, update_layer
from dlc.ir import Example
from dlc.lang.compiler import compile_file, compile_source
from dlc.lm.base import Capabilities
from dlc.lm.scripted import ScriptedLM
from dlc.rng import Rng

from conftest import GRAPHS


def paper(g):
    """No calibration offsets (these tests pin the DLN arithmetic; tests/test_calibration.py covers the offsets)."""
    layers = {n: dataclasses.replace(lay, calibration="none") for n, lay in g.layers.items()}
    return dataclasses.replace(g, layers=layers)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def log_softmax(xs: list[float]) -> list[float]:
    z = lse(*xs)
    return [x - z for x in xs]


def ex(n: int, targets=("yes", "no")) -> list[Example]:
    return [Example({"x": f"e{i}"}, targets[i % len(targets)], f"e{i}") for i in range(n)]


def posterior(node, samples, weights):
    return Posterior(node=node, samples=samples, weights=weights, logits=weights, best=[s[0] for s in samples])


TWO = """
network two
input x
layer h(x) { template = step_by_step  prompt = "H0" }
layer y(x, h) {
  template = residual
  prompt = "P0"
  output = choice { yes: "yes", no: "no" }
}
output y
"""


# ------------------------------------------------------------------------------------------------ use_nce
def test_use_nce_scores_how_a_hidden_prompt_ranks_the_samples():
    """use_nce (dln-reference §1.4 step 6): S_ikn -> log softmax_k S_ikn per example. H0 ranks the heavy sample B
    above A (-1 vs -3); H1 makes every sample likelier but hardly tells them apart (-0.5 vs -0.6): the plain ELBO
    picks H1, the NCE score H0. Example 1 has one sample: its NCE term is log 1 = 0 for every candidate."""
    g = paper(compile_source(TWO))
    logp = {("H0", "A"): -3.0, ("H0", "B"): -1.0, ("H0", "C"): -2.0,
            ("H1", "A"): -0.5, ("H1", "B"): -0.6, ("H1", "C"): -0.1}

    def score(p, c):
        if c in ("yes", "no"):
            return -0.1 if c == "no" else -2.0
        return logp.get(("H1" if "H1" in p else "H0", c), -1.0)
    lm = ScriptedLM(generate_fn=lambda p, r, i: "H1" if r.tag == "h/propose" else "h-hat", score_fn=score)
    tr = forward(g, g.prompts(), {"default": lm}, ex(2))
    post = {"h": posterior("h", [["A", "B"], ["C"]], [[0.25, 0.75], [1.0]])}
    plain = [((0.25 * -3.0 + 0.75 * -1.0) + -2.0) / 2, ((0.25 * -0.5 + 0.75 * -0.6) + -0.1) / 2]
    n0, n1 = log_softmax([-3.0, -1.0]), log_softmax([-0.5, -0.6])
    nce = [(0.25 * n0[0] + 0.75 * n0[1] + 0.0) / 2, (0.25 * n1[0] + 0.75 * n1[1] + 0.0) / 2]
    chosen = {}
    for use_nce, want in ((False, plain), (True, nce)):
        c = dataclasses.replace(g.fit, hidden_logp="sum", use_nce=use_nce, num_p_samples=2, use_memory=0)
        upd = update_layer(g, "h", g.prompts(), [], {"default": lm}, tr, post, c, Rng(1), 0, 0.0)
        assert upd.candidates == ["H0", "H1"]
        assert upd.elbo == pytest.approx(want, abs=1e-12)
        chosen[use_nce] = upd.chosen
    assert chosen == {False: "H1", True: "H0"}
    # the output layer's score is a log-likelihood of y, never NCE-normalised (one target per configuration would
    # make it log 1 = 0 for every candidate)
    outs = [score_candidates(g, "y", ["P0"], g.prompts(), {"default": lm}, tr, post,
                             dataclasses.replace(g.fit, use_nce=u), 0.0)[0] for u in (False, True)]
    assert outs[0] == pytest.approx(outs[1]) and outs[0][0] < -0.5


CHAIN = """
network chain
input x
layer a(x) { template = step_by_step  prompt = "A0" }
layer r(a) { template = step_by_step  prompt = "R0" }
layer y(x, r) {
  template = residual
  prompt = "P0"
  output = choice { yes: "yes", no: "no" }
}
output y
"""


def test_use_nce_normalises_over_the_samples_of_each_input_configuration():
    """A hidden layer with a hidden parent: S(a, r) = log p(r | a, π) for the parent's samples a (weights w_a) and
    the layer's samples r (weights w_r); NCE is a log-softmax over r for each a, not over all (a, r) pairs:
    ELBO = Σ_a w_a Σ_r w_r log softmax_r S(a, ·)."""
    g = paper(compile_source(CHAIN))
    S = {("alpha", "rone"): -1.0, ("alpha", "rtwo"): -2.0, ("beta", "rone"): -3.0, ("beta", "rtwo"): -0.5}

    def score(p, c):
        for (a, r), v in S.items():
            if r == c and a in p:
                return v
        return -1.0
    lm = ScriptedLM(generate_fn=lambda p, r, i: f"{r.tag.split('/')[0]}-hat", score_fn=score)
    tr = forward(g, g.prompts(), {"default": lm}, ex(1))
    post = {"r": posterior("r", [["rone", "rtwo"]], [[0.3, 0.7]]),
            "a": posterior("a", [["alpha", "beta"]], [[0.4, 0.6]])}
    wa, wr = {"alpha": 0.4, "beta": 0.6}, {"rone": 0.3, "rtwo": 0.7}
    plain = sum(wa[a] * wr[r] * v for (a, r), v in S.items())
    nce = 0.0
    for a in ("alpha", "beta"):
        ls = log_softmax([S[(a, "rone")], S[(a, "rtwo")]])
        nce += wa[a] * (wr["rone"] * ls[0] + wr["rtwo"] * ls[1])
    for use_nce, want in ((False, plain), (True, nce)):
        c = dataclasses.replace(g.fit, hidden_logp="sum", use_nce=use_nce)
        elbo, _kl, pen, _ = score_candidates(g, "r", ["R0"], g.prompts(), {"default": lm}, tr, post, c, 0.0)
        assert elbo == pytest.approx([want], abs=1e-12) and pen is None
    joint = log_softmax(list(S.values()))
    assert abs(nce - sum(wa[a] * wr[r] * v for (a, r), v in zip(S, joint))) > 0.1   # the grouping matters


# ------------------------------------------------------------------------------------------------ accuracy mode
def test_accuracy_mode_weights_are_the_outputs_0_1_accuracy_without_prior_or_q():
    """Posterior sharpening in accuracy mode (dln-reference §1.4 step 4: "In accuracy mode the logits are 0/1
    accuracies"): with output_scoring = accuracy and a choice output, logit_k = 1[argmax_label(x, h_k) = y]; the
    prior log p(h | x) and log q(h) are not added even when include_prior / correct_weighting are on. The prior
    here prefers the bad sample and the log-likelihoods are not 0/1, so either term would change the weights."""
    g = paper(compile_file(GRAPHS / "dln2.dln"))
    flip = iter(range(10**6))

    def gen(p, r, i):
        if r.tag == "h/posterior":
            return "good reasoning" if next(flip) % 2 == 0 else "bad reasoning"
        return "bad reasoning"

    def score(p, c):
        if c.lower() in ("subjective", "objective"):
            idx = int(p.split(" text")[0].split("s")[-1])
            right = c.lower() == ("subjective", "objective")[idx % 2]
            return -0.2 if right == ("good reasoning" in p) else -4.0
        return -0.4 if c == "good reasoning" else -0.2
    lm = ScriptedLM(generate_fn=gen, score_fn=score)
    exs = [Example({"x": f"s{i} text"}, ("subjective", "objective")[i % 2], f"s{i}") for i in range(2)]
    tr = forward(g, g.prompts(), {"default": lm}, exs)
    assert tr.correct == [False, False]
    c = dataclasses.replace(g.fit, num_h_samples=4, output_scoring="accuracy", include_prior=True,
                            correct_weighting=True, posterior_temp=0.5, rewrite_loss_only=False)
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(2), 0)["h"]
    z = 2 * math.exp(1 / 0.5) + 2 * math.exp(0.0)
    for i in range(2):
        assert post.samples[i] == ["good reasoning", "bad reasoning"] * 2
        assert post.logp_children[i] == [1.0, 0.0, 1.0, 0.0]
        assert post.logits[i] == [1.0, 0.0, 1.0, 0.0]
        assert post.weights[i] == pytest.approx([math.exp(2) / z, 1 / z, math.exp(2) / z, 1 / z])
    assert post.best == ["good reasoning"] * 2
    assert post.logp_prior is None and post.logq is None
    assert not {"h/posterior_prior", "h/posterior_q"} & {x.tag for x in lm.calls}


NO_LOGPROBS = Capabilities(prompt_logprobs=False, top_logprobs=0)

NUMBER = """
network num
input x
layer y(x) { template = classify  prompt = "P0"  output = number }
output y { metric = final_answer }
"""


def test_generative_output_is_scored_by_the_accuracy_of_its_answers():
    """output_scoring = accuracy with a number output (dln-reference §1.3 step 4, "accuracy": s_n = mean 0/1
    accuracy of greedy decodes): P0 answers 1 of 3 right, the proposal 2 of 3 (final_answer metric: "1,234" is not
    1234000, "It fell by 15" is not -15). The answers are generated, never scored: a backend without prompt
    log-probs (a chat-only model) trains such a network."""
    g = paper(compile_source(NUMBER))
    said = {"GOOD": {"q0": "It made 1,234,000 dollars.", "q1": "72", "q2": "It fell by 15."},
            "P0": {"q0": "1,234", "q1": "The answer is 72.", "q2": "No idea."}}

    def gen(p, r, i):
        if r.tag == "y/propose":
            return "GOOD prompt"
        table = said["GOOD" if "GOOD" in p else "P0"]
        return next(v for k, v in table.items() if k in p)

    def never_scores(p, c):
        raise AssertionError(f"scored {c!r}: an accuracy-scored generative output needs no log-probs")
    lm = ScriptedLM(generate_fn=gen, score_fn=never_scores, capabilities=NO_LOGPROBS)
    exs = [Example({"x": k}, t, k) for k, t in (("q0", "1234000"), ("q1", "72"), ("q2", "-15"))]
    tr = forward(g, g.prompts(), {"default": lm}, exs)
    assert tr.correct == [False, True, False]
    c = dataclasses.replace(g.fit, output_scoring="accuracy", num_p_samples=2, use_memory=0)
    upd = update_layer(g, "y", g.prompts(), [], {"default": lm}, tr, {}, c, Rng(1), 0, 0.0)
    assert upd.candidates == ["P0", "GOOD prompt"]
    assert upd.elbo == pytest.approx([1 / 3, 2 / 3]) and upd.chosen == "GOOD prompt"
    scored = [x for x in lm.calls if x.tag == "y/score"]
    assert len(scored) == 6 and all(x.kind == "generate" and x.temperature == 0.0 for x in scored)


# ------------------------------------------------------------------------------------------------ hidden choice layer
HIDDEN_CHOICE = """
network hc
input x
layer c(x) { template = classify  prompt = "C0"  output = choice { pos: "pos", neg: "neg" } }
layer y(x, c) {
  template = residual
  prompt = "P0"
  output = choice { yes: "yes", no: "no" }
}
output y
"""


def hidden_choice_lm() -> ScriptedLM:
    """c: under C1 "pos" is likely (-0.2 vs -2.5), else "neg" (-0.5 vs -2.0); y says yes exactly when c = pos.
    Posterior proposals for c: "Pos." (label pos), "something else" (no label), "NEG" (label neg)."""
    said = iter(["Pos.", "something else", "NEG"] * 100)

    def gen(p, r, i):
        return next(said) if r.tag == "c/posterior" else "C1"

    def score(p, cont):
        if cont in ("pos", "neg"):
            return {"pos": -0.2, "neg": -2.5}[cont] if "C1" in p else {"pos": -2.0, "neg": -0.5}[cont]
        if cont in ("yes", "no"):
            return (-0.1 if cont == "yes" else -3.0) if "thoughts were:\npos" in p else \
                (-3.0 if cont == "yes" else -0.1)
        raise AssertionError(f"a hidden choice layer's value is a label, not {cont!r}")
    return ScriptedLM(generate_fn=gen, score_fn=score)


def test_hidden_choice_layer_samples_are_labels_weighted_by_class_normalised_logps():
    """A hidden choice layer (Alg. 3 with a label set for h): a proposal becomes the label it names, else the
    forward label; its prior is the class-normalised log p~(label | x, π0) (§1.2 item 3), the child's term
    log p~(y | x, label, π1)."""
    g = paper(compile_source(HIDDEN_CHOICE))
    lm = hidden_choice_lm()
    exs = ex(2, targets=("yes",))
    tr = forward(g, g.prompts(), {"default": lm}, exs)
    assert tr.texts["c"] == ["neg", "neg"] and tr.texts["y"] == ["no", "no"] and tr.correct == [False, False]
    assert not [x for x in lm.calls if x.kind == "generate"]            # a choice layer is read, not generated
    c = dataclasses.replace(g.fit, num_h_samples=3, include_prior=True, rewrite_loss_only=False)
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(3), 0)["c"]
    child = {"pos": -0.1 - lse(-0.1, -3.0), "neg": -3.0 - lse(-3.0, -0.1)}
    prior = {"pos": -2.0 - lse(-2.0, -0.5), "neg": -0.5 - lse(-2.0, -0.5)}
    logits = [child[s] + prior[s] for s in ("pos", "neg", "neg")]
    weights = [math.exp(v - lse(*logits)) for v in logits]
    for i in range(2):
        assert post.samples[i] == ["pos", "neg", "neg"]
        assert post.logp_children[i] == pytest.approx([child["pos"], child["neg"], child["neg"]])
        assert post.logp_prior[i] == pytest.approx([prior["pos"], prior["neg"], prior["neg"]])
        assert post.weights[i] == pytest.approx(weights)
    assert post.best == ["pos", "pos"]

    # the layer's prompt update: ELBO_n = (1/B) Σ_i Σ_k w_k log p~(c_k | x, π_n); penalty on the wrong ĥ = neg
    posts = {"c": post}
    elbo, _kl, pen, _ = score_candidates(g, "c", ["C0", "C1"], g.prompts(), {"default": lm}, tr, posts, c, 0.5)
    c1 = {"pos": -0.2 - lse(-0.2, -2.5), "neg": -2.5 - lse(-0.2, -2.5)}
    want = [sum(w * lp[s] for w, s in zip(weights, ("pos", "neg", "neg"))) for lp in (prior, c1)]
    assert elbo == pytest.approx(want)
    assert pen == pytest.approx([prior["neg"], c1["neg"]])


# ------------------------------------------------------------------------------------------------ label_agg, output_logp
VERBALIZERS = """
network verb
input x
layer y(x) {
  template = classify
  prompt = "P0"
  output = choice { yes: "yes" | "Yes" | "sure", no: "no" }
}
output y
"""


def test_label_agg_max_takes_the_best_verbalizer_not_the_label_mass():
    """§1.2 item 3, sum or max the probability over each class's verbalizers: yes has three verbalizers at -2
    (mass log 3e^-2 = -0.90), no one at -1. logsumexp predicts yes, max predicts no; log p~(yes) differs."""
    g = paper(compile_source(VERBALIZERS))
    lm = ScriptedLM(generate_fn=lambda p, r, i: "P1", score_fn=lambda p, c: -1.0 if c == "no" else -2.0)
    exs = ex(1, targets=("yes",))
    want = {"logsumexp": log_softmax([-2.0 + math.log(3), -1.0]), "max": log_softmax([-2.0, -1.0])}
    pred = {}
    for agg in ("logsumexp", "max"):
        c = dataclasses.replace(g.fit, label_agg=agg)
        tr = forward(g, g.prompts(), {"default": lm}, exs, opts=score_opts(c))
        pred[agg] = tr.texts["y"][0]
        assert tr.nodes["y"].label_logdist[0] == pytest.approx(want[agg])
        elbo = score_candidates(g, "y", ["P0"], g.prompts(), {"default": lm}, tr, {}, c, 0.0)[0]
        assert elbo == pytest.approx([want[agg][0]])
    assert pred == {"logsumexp": "yes", "max": "no"}


MULTI_TOKEN = """
network mt
input x
layer y(x) {
  template = classify
  prompt = "P0"
  output = choice { yes: "yes indeed", no: "no" }
}
output y
"""

TEXT_OUT = """
network txt
input x
layer y(x) { template = classify  prompt = "P0"  output = text }
output y
"""


def test_output_logp_mean_normalises_labels_and_answers_by_length():
    """output_logp = mean (§1.2 item 2, per-token mean): the two-token verbalizer "yes indeed" (-1.2 per token,
    -2.4 in all) against "no" (-1.5): sum predicts no, mean predicts yes. A text output's target log p is the
    mean of its tokens' (-4 over 4 tokens: -1), not the sum."""
    g = paper(compile_source(MULTI_TOKEN))
    lm = ScriptedLM(score_fn=lambda p, c: [-1.2, -1.2] if c == "yes indeed" else -1.5)
    exs = ex(1, targets=("yes",))
    want = {"sum": log_softmax([-2.4, -1.5]), "mean": log_softmax([-1.2, -1.5])}
    pred = {}
    for red in ("sum", "mean"):
        c = dataclasses.replace(g.fit, output_logp=red)
        tr = forward(g, g.prompts(), {"default": lm}, exs, opts=score_opts(c))
        pred[red] = tr.texts["y"][0]
        assert tr.nodes["y"].label_logdist[0] == pytest.approx(want[red])
        assert score_candidates(g, "y", ["P0"], g.prompts(), {"default": lm}, tr, {}, c, 0.0)[0] == \
            pytest.approx([want[red][0]])
    assert pred == {"sum": "no", "mean": "yes"}

    gt = paper(compile_source(TEXT_OUT))
    lm = ScriptedLM(generate_fn=lambda p, r, i: "no idea",
                    score_fn=lambda p, c: [-0.5, -1.5, -1.0, -1.0] if c == "the answer is yes" else -9.0)
    exs = [Example({"x": "e0"}, "the answer is yes", "e0")]
    tr = forward(gt, gt.prompts(), {"default": lm}, exs)
    for red, want_lp in (("sum", -4.0), ("mean", -1.0)):
        c = dataclasses.replace(gt.fit, output_logp=red, hidden_logp="sum")
        assert score_candidates(gt, "y", ["P0"], gt.prompts(), {"default": lm}, tr, {}, c, 0.0)[0] == \
            pytest.approx([want_lp])


def test_the_plan_counts_an_accuracy_scored_number_output_as_generations():
    """`dlc fit --dry-run`'s plan for an accuracy-scored generative output: its candidates are judged by greedy
    answers (generate requests), as a real step sends them, and no candidate is scored."""
    from dlc.train.plan import plan
    from dlc.train.trainer import Trainer

    g = paper(compile_source(NUMBER))
    cfg = dataclasses.replace(g.fit, output_scoring="accuracy", num_p_samples=2, use_memory=0, iters=1,
                              batch_size=3, val_freq=1, do_first_eval=False)

    def gen(p, r, i):
        return "GOOD prompt" if r.tag == "y/propose" else "7"

    def never_scores(p, c):
        raise AssertionError(f"scored {c!r}")
    lm = ScriptedLM(generate_fn=gen, score_fn=never_scores)
    exs = [Example({"x": f"q{i}"}, "8", f"q{i}") for i in range(3)]      # every answer wrong: the layer is updated
    per = plan(g, cfg, 3, 3)["per_iteration"]
    Trainer(g, {"default": lm}, exs, exs, cfg).step()
    sent = sum(1 for c in lm.calls if c.tag == "y/score")
    assert per["candidate_generate"] == sent == 2 * 3 and "candidate_score" not in per

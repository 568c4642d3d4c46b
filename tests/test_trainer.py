"""The full loop with a scripted LM on graphs/dln1, dln2, deep3, branched: exact call sequences, selected prompts,
propagated targets, validation/memory/backtracking, resume, plan, budget and config errors."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from dlc.lang.compiler import compile_file
from dlc.errors import DlcError
from dlc.ir import Example
from dlc.lm.scripted import ScriptedLM
from dlc.rng import Rng
from dlc.train.evaluation import evaluate
from dlc.train.plan import plan
from dlc.train.trainer import Trainer, TrainState

from conftest import REPO as ROOT
TRUTH = ("subjective", "objective")


def graph(name: str):
    return paper(compile_file(ROOT / "graphs" / f"{name}.dln"))


def paper(g):
    """The paper's engine: no calibration offsets, selection by dev accuracy with the strictly-better rule (these
    tests pin the DLN arithmetic and call order; tests/test_calibration.py and test_selection.py cover the rest)."""
    layers = {n: dataclasses.replace(lay, calibration="none") for n, lay in g.layers.items()}
    return dataclasses.replace(g, layers=layers, fit=dataclasses.replace(g.fit, validation="accuracy", accept="best"))


def examples(n: int, start: int = 0) -> list[Example]:
    return [Example({"x": f"s{i} text"}, TRUTH[i % 2], f"s{i}") for i in range(start, start + n)]


def world() -> ScriptedLM:
    """The output layer is right only under a prompt containing GOOD; the output layer's proposals say GOOD."""
    def gen(prompt: str, r, i: int) -> str:
        node, purpose = r.tag.split("/")
        if purpose == "propose":
            return "GOOD instruction" if node == "y" else f"{node} prompt v{r.seed % 3}"
        if purpose == "posterior":
            return f"{node} sample {r.seed % 5}"
        return f"{node} thought"

    def score(prompt: str, cont: str) -> float | None:
        if cont.lower() in TRUTH:
            i = int(re.search(r"s(\d+) text", prompt).group(1))
            right = cont.lower() == TRUTH[i % 2]
            return -0.1 if right == ("GOOD" in prompt) else -3.0
        return None                                              # hidden texts: hash-derived log-probs
    return ScriptedLM(generate_fn=gen, score_fn=score)


def trainer(name: str, lm: ScriptedLM, **kw) -> Trainer:
    g = graph(name)
    cfg = dataclasses.replace(g.fit, **({"iters": 1, "batch_size": 4, "num_p_samples": 3, "num_h_samples": 2,
                                         "val_freq": 1} | kw))
    return Trainer(g, {"default": lm}, examples(8), examples(4, 100), cfg)


def tags(lm: ScriptedLM) -> list[str]:
    return [f"{kind}:{tag}" for kind, tag, _n in lm.batches]


def test_dln1_exact_calls_and_selected_prompt():
    lm = world()
    tr = trainer("dln1", lm)
    r0 = tr.step()
    assert tags(lm) == ["score:y/forward",      # dev validation of the initial prompt
                        "score:y/forward",      # training batch forward
                        "generate:y/propose",   # N-1 = 2 proposals (both "GOOD instruction": deduplicated)
                        "score:y/score"]        # candidates [current, GOOD] x 4 examples x 4 verbalizers
    assert lm.batches[0][2] == 4 * 4 and lm.batches[2][2] == 2 and lm.batches[3][2] == 2 * 4 * 4
    assert r0["dev"] == 0.0 and r0["train_acc"] == 0.0
    assert r0["layers"]["y"]["candidates"] == [graph("dln1").layers["y"].prompt, "GOOD instruction"]
    assert r0["layers"]["y"]["chosen"] == "GOOD instruction"
    r1 = tr.step()
    assert r1["dev"] == 1.0 and tr.finished() and tr.state.best_prompts["y"] == "GOOD instruction"
    assert tags(lm)[-1] == "score:y/forward" and tr.state.prompts == tr.state.best_prompts
    json.dumps([r0, r1])


def test_dln2_exact_calls_targets_and_prompts():
    lm = world()
    tr = trainer("dln2", lm)
    r0 = tr.step()
    assert tags(lm) == ["generate:h/forward", "score:y/forward",                  # dev
                        "generate:h/forward", "score:y/forward",                  # batch forward
                        "generate:h/posterior", "score:y/posterior_weight", "score:h/posterior_prior",
                        "generate:y/propose", "score:y/score",                    # output layer first
                        "generate:h/propose", "score:h/score"]                    # (+ h/penalty in that batch)
    hid = r0["hidden"]["h"]
    assert all(len(s) == 2 for s in hid["samples"]) and all(abs(sum(w) - 1) < 1e-9 for w in hid["weights"])
    # the output target is the label; the hidden target h* is the best-weighted sample
    for s, w, b in zip(hid["samples"], hid["weights"], hid["best"]):
        assert b == s[max(range(2), key=lambda k: (w[k], -k))]
    h_up = r0["layers"]["h"]
    assert h_up["penalty"] is not None and h_up["penalty_weight"] == pytest.approx(0.5)   # decay at t=0
    assert r0["layers"]["y"]["chosen"] == "GOOD instruction"
    assert tr.state.prompts["h"] == h_up["chosen"]
    # the hidden layer's proposals see h* as the correct output
    prop = [c for c in lm.calls if c.tag == "h/propose"][0].prompt
    assert any(b in prop for b in hid["best"])


def test_deep3_alg3_chain():
    lm = world()
    tr = trainer("deep3", lm)
    r0 = tr.step()
    fwd = ["generate:analysis/forward", "generate:reasoning/forward", "score:y/forward"]
    assert tags(lm) == fwd + fwd + [
        "generate:reasoning/posterior", "score:y/posterior_weight", "score:reasoning/posterior_prior",
        "generate:analysis/posterior", "score:reasoning/posterior_weight", "score:analysis/posterior_prior",
        "generate:y/propose", "score:y/score",
        "generate:reasoning/propose", "score:reasoning/score",
        "generate:analysis/propose", "score:analysis/score"]
    best_r = r0["hidden"]["reasoning"]["best"]
    # analysis samples are weighted by how well they predict reasoning's h*
    cont = {c.continuation for c in lm.calls if c.tag == "reasoning/posterior_weight"}
    assert cont == set(best_r)
    # reasoning's candidates are scored on (analysis sample, reasoning sample) pairs: K x K per example
    n_cands = len(r0["layers"]["reasoning"]["candidates"])
    n_score = sum(1 for c in lm.calls if c.tag == "reasoning/score")
    n_pen = sum(1 for c in lm.calls if c.tag == "reasoning/penalty")
    assert n_pen == 0 or n_pen <= n_cands * 4
    assert n_score <= n_cands * 4 * 2 * 2 and n_score >= len(set(r0["hidden"]["reasoning"]["samples"][0]))
    assert r0["layers"]["y"]["chosen"] == "GOOD instruction"


def test_branched_output_layer_averages_over_both_hidden_parents():
    lm = world()
    tr = trainer("branched", lm)
    r0 = tr.step()
    assert set(r0["hidden"]) == {"steps", "brief"}
    t = tags(lm)
    assert t.index("generate:steps/posterior") < t.index("generate:brief/posterior")   # reverse topological
    assert t[-6:] == ["generate:y/propose", "score:y/score", "generate:steps/propose", "score:steps/score",
                      "generate:brief/propose", "score:brief/score"]
    # y is scored with one hidden parent varied at a time, the other at the value that parent's posterior was
    # weighted with (issue 17, engine 2): steps (visited first) with brief at its forward output, brief with steps
    # at its h*. The current prompt is scored on exactly the configurations the posteriors weighed.
    ctxs = [c.prompt for c in lm.calls if c.tag == "y/score"]
    for s in r0["hidden"]["steps"]["samples"][0]:
        assert any(s in p and "brief thought" in p for p in ctxs)
    for s in r0["hidden"]["brief"]["samples"][0]:
        assert any(s in p and r0["hidden"]["steps"]["best"][0] in p for p in ctxs)
    weighed = {(c.prompt, c.continuation) for c in lm.calls if c.tag == "y/posterior_weight"}
    scored = {(c.prompt, c.continuation) for c in lm.calls if c.tag == "y/score" and "GOOD" not in c.prompt}
    assert scored == weighed and len(weighed) > 4


def _strip(records):
    return [{k: v for k, v in r.items() if k != "tokens"} for r in records]


@pytest.mark.parametrize("name", ["dln1", "dln2"])
def test_resume_makes_the_same_choices(name):
    kw = dict(iters=3, val_freq=2, tolerance=1)
    a = trainer(name, world(), **kw)
    full = a.run()
    b = trainer(name, world(), **kw)
    first = [b.step()]
    saved = json.loads(json.dumps(b.state.to_json()))
    assert TrainState.from_json(saved) == b.state
    g = b.graph
    c = Trainer(g, {"default": world()}, examples(8), examples(4, 100), b.config, TrainState.from_json(saved))
    rest = c.run()
    assert _strip(first + rest) == _strip(full)
    assert c.state.to_json()["prompts"] == a.state.to_json()["prompts"]
    assert [h["prompts"] for h in c.state.history] == [h["prompts"] for h in a.state.history]


def test_memory_backtracking_and_no_error_skip():
    g = graph("dln1")
    lm = ScriptedLM(generate_fn=lambda p, r, i: "BAD prompt",
                    score_fn=lambda p, c: -0.1 if (c.lower() == "subjective") == ("BAD" not in p) else -3.0)
    tr = Trainer(g, {"default": lm}, examples(8), examples(4, 100),
                 dataclasses.replace(g.fit, iters=3, batch_size=4, num_p_samples=2, val_freq=1, tolerance=1,
                                     use_memory=2, output_scoring="accuracy"))
    recs = tr.run()
    assert recs[0]["dev"] == 0.5 and recs[0]["baseline"] and "improved" not in recs[0]
    assert [r.get("improved") for r in recs[1:]] == [False] * (len(recs) - 1)
    assert tr.state.memory == [{"prompts": g.prompts(), "dev": 0.5}]
    # accuracy scoring: "BAD prompt" flips every answer; the batch accuracy decides
    for r in recs[:-1]:
        if "layers" in r:
            up = r["layers"]["y"]
            assert up["elbo"][0] == pytest.approx(r["train_acc"])
    assert tr.state.prompts == tr.state.best_prompts
    assert tr.state.history[-1]["iteration"] == 3


def test_skip_when_the_batch_has_no_errors():
    g = graph("dln1")
    lm = ScriptedLM(score_fn=lambda p, c: -0.1 if c.lower() == "subjective" else -3.0)
    ex = [Example({"x": f"s{i} text"}, "subjective", f"s{i}") for i in range(4)]
    tr = Trainer(g, {"default": lm}, ex, ex, dataclasses.replace(g.fit, iters=1, batch_size=4, do_first_eval=False))
    r = tr.step()
    assert r["skipped"] and not any(c.kind == "generate" for c in lm.calls)


def test_plan_counts_match_a_real_step():
    lm = world()
    tr = trainer("dln2", lm, do_first_eval=False)
    p = plan(tr.graph, tr.config, 8, 4)
    tr.step()
    n = lambda tag: sum(1 for c in lm.calls if c.tag == tag)   # noqa: E731
    per = p["per_iteration"]
    assert per["forward_generate"] == n("h/forward") == 4
    assert per["posterior_generate"] == n("h/posterior") == 8
    assert per["propose_generate"] == n("y/propose") + n("h/propose") == 4
    assert per["forward_score"] >= n("y/forward") and per["candidate_score"] >= n("y/score") + n("h/score")
    assert p["validations"] == 1 and p["trained_layers"] == ["h", "y"]
    # the completion bound holds every generation to its cap: a posterior sample to the hidden layer's max_tokens
    caps = {c.tag: c.max_tokens for c in lm.calls if c.kind == "generate"}
    assert caps["h/posterior"] == caps["h/forward"] == tr.graph.layers["h"].generation.max_tokens
    assert sum(c.max_tokens for c in lm.calls if c.kind == "generate") <= p["max_completion_tokens_per_iteration"]


def test_budget_stops_cleanly():
    lm = world()
    tr = trainer("dln1", lm, iters=5, budget_tokens=1)
    r = tr.step()
    assert tr.finished() and "budget" in r["stopped"]


def test_evaluate_zero_and_n_shot():
    g = graph("dln1")
    lm = world()
    res = evaluate(g, g.prompts(), {"default": lm}, examples(4, 100))
    assert res.accuracy == 0.0 and res.per_class == {"objective": 0.0, "subjective": 0.0}
    assert res.confusion == {"subjective": {"objective": 2}, "objective": {"subjective": 2}}
    assert json.loads(json.dumps(res.to_json()))["accuracy"] == 0.0
    lm2 = world()
    evaluate(g, g.prompts(), {"default": lm2}, examples(2, 100), n_shots=2, shots_from=examples(6))
    ctx = lm2.calls[0].prompt
    assert ctx.count("Answer:") == 3 and "\n\n\n" in ctx                 # two demonstrations + the question
    assert ctx.count("Answer: objective") + ctx.count("Answer: subjective") == 2     # the cue, a space, the label


@pytest.mark.parametrize("kw,code", [({"batch_size": 0}, "E311"), ({"train": ("yy",)}, "E711"),
                                     ({"posterior_temp": 0.0}, "E311"), ({"validation": "dev"}, "E314")])
def test_bad_settings_are_fit_errors(kw, code):
    g = graph("dln1")
    with pytest.raises(DlcError) as e:
        Trainer(g, {"default": world()}, examples(2), examples(2), dataclasses.replace(g.fit, **kw))
    assert e.value.code == code and e.value.hint


def test_n_shot_baseline_validates_with_demonstrations():
    g = graph("dln1")
    lm = world()
    tr = Trainer(g, {"default": lm}, examples(6), examples(2, 100), dataclasses.replace(g.fit, iters=0, n_shots=2))
    r = tr.step()
    assert tr.finished() and r["dev"] is not None
    assert all(c.prompt.count("Answer:") == 3 for c in lm.calls)


def test_n_shots_with_training_is_refused():
    """Issue 17, engine 5: validation would use demonstrations that training never sees (E330, as in the
    compiler)."""
    from dlc.errors import DlcSemanticError
    g = graph("dln1")
    with pytest.raises(DlcSemanticError) as ei:
        Trainer(g, {"default": world()}, examples(6), examples(2, 100), dataclasses.replace(g.fit, iters=2, n_shots=2))
    assert ei.value.code == "E330" and "iters = 0" in ei.value.hint


# ------------------------------------------------------------------ issue 17, engine 8: branches of the loop
DLN2_STEP = ["generate:h/forward", "score:y/forward",                     # dev
             "generate:h/forward", "score:y/forward",                     # batch forward
             "generate:h/posterior", "score:y/posterior_weight", "score:h/posterior_prior"]


@pytest.mark.parametrize("train", [("y",), ("h",)])
def test_fit_train_updates_only_the_named_layers(train):
    """fit.train: only the named layers get a prompt step; the others keep their prompts (and cost nothing). h's
    posterior is still inferred when only y trains: y's candidates are scored on h's samples."""
    lm = world()
    tr = trainer("dln2", lm, train=train)
    r0 = tr.step()
    (node,) = train
    other = "h" if node == "y" else "y"
    assert tags(lm) == DLN2_STEP + [f"generate:{node}/propose", f"score:{node}/score"]
    assert list(r0["layers"]) == [node]
    assert tr.state.prompts[other] == graph("dln2").layers[other].prompt
    assert not [c for c in lm.calls if c.tag.startswith(f"{other}/") and c.tag.split("/")[1] in
                ("propose", "score", "penalty")]


def test_a_fixed_layer_is_not_trained_unless_named():
    """`fixed = true` takes a layer out of the default set (fit.train empty); naming it in fit.train trains it."""
    g = paper(compile_file(ROOT / "graphs" / "dln2.dln", {"layer.y.fixed": "true"}))
    assert not g.layers["y"].trainable
    cfg = dataclasses.replace(g.fit, iters=1, batch_size=4, num_p_samples=3, num_h_samples=2, val_freq=1)
    for train, want in (((), ["h"]), (("y",), ["y"])):
        lm = world()
        r0 = Trainer(g, {"default": lm}, examples(8), examples(4, 100),
                     dataclasses.replace(cfg, train=train)).step()
        assert list(r0["layers"]) == want
        assert {c.tag for c in lm.calls if c.tag.endswith("/propose")} == {f"{want[0]}/propose"}


def stepping_world() -> ScriptedLM:
    """world(), except that h's proposals improve on their base prompt ("" -> "H better1" -> "H better2") and every
    hidden text is likelier under a better h prompt (-1 -> -0.5 -> -0.2)."""
    base = world()

    def gen(prompt: str, r, i: int) -> str:
        if r.tag == "h/propose":
            return "H better2" if "H better1" in prompt else "H better1"
        return base.generate_fn(prompt, r, i)

    def score(prompt: str, cont: str) -> float | None:
        if cont.lower() in TRUTH:
            return base.score_fn(prompt, cont)
        return -0.2 if "H better2" in prompt else -0.5 if "H better1" in prompt else -1.0
    return ScriptedLM(generate_fn=gen, score_fn=score)


def test_num_p1_steps_chains_local_search_steps_on_hidden_layers():
    """num_p1_steps = 2 (dln-reference §1.4 step 6, "repeated num_p1_steps times"): the hidden layer takes two
    propose/score/select steps from the same samples, the second from the first's choice; the output layer one."""
    lm = stepping_world()
    tr = trainer("dln2", lm, num_p1_steps=2)
    r0 = tr.step()
    h = r0["layers"]["h"]
    assert isinstance(r0["layers"]["y"], dict) and isinstance(h, list) and [s["step"] for s in h] == [0, 1]
    assert (h[0]["current"], h[0]["chosen"]) == ("", "H better1")
    assert (h[1]["current"], h[1]["chosen"]) == ("H better1", "H better2")
    assert tr.state.prompts["h"] == "H better2"
    assert tags(lm)[-4:] == ["generate:h/propose", "score:h/score", "generate:h/propose", "score:h/score"]
    seeds = [c.seed for c in lm.calls if c.tag == "h/propose"]
    assert seeds == [Rng(tr.config.seed).seed_for("iter", 0, "node", "h", "propose", s, j)
                     for s in (0, 1) for j in (0, 1)]
    y = r0["layers"]["y"]
    assert r0["elbo"] == pytest.approx(y["elbo"][y["chosen_index"]] + h[1]["elbo"][h[1]["chosen_index"]])
    # both steps use the same posterior: no second forward or posterior pass
    assert tags(lm).count("generate:h/posterior") == 1 and tags(lm).count("generate:h/forward") == 2


def test_balance_batch_goes_round_robin_over_the_classes():
    """balance_batch (dln-reference §1.3 step 1: "Balanced batches go round-robin over the classes in a random
    order"): from 12 subjective and 4 objective examples, a batch of 8 alternates the classes (4 each); a batch of
    10 alternates until objective runs out. Unbalanced sampling gives other mixes at this seed."""
    g = graph("dln1")
    train = [Example({"x": f"s{i} text"}, "subjective" if i < 12 else "objective", f"s{i}") for i in range(16)]

    def batches(balance: bool, size: int) -> list[list[Example]]:
        tr = Trainer(g, {"default": world()}, train, examples(2, 100),
                     dataclasses.replace(g.fit, batch_size=size, balance_batch=balance))
        return [tr.sample_batch(t) for t in range(10)]
    firsts = set()
    for b in batches(True, 8):
        labels = [e.target for e in b]
        assert len({e.id for e in b}) == 8
        assert len(set(labels[0::2])) == 1 and len(set(labels[1::2])) == 1 and labels[0] != labels[1]
        firsts.add(labels[0])
    assert firsts == {"subjective", "objective"}                  # the class order is random per batch
    for b in batches(True, 10):
        labels = [e.target for e in b]
        assert labels.count("objective") == 4 and labels[8:] == ["subjective"] * 2
        assert all(labels[k] != labels[k + 1] for k in range(7))
    assert any(sum(e.target == "objective" for e in b) != 4 for b in batches(False, 8))


def always_wrong_world() -> ScriptedLM:
    """world(), but the output layer is right on even examples only, whatever its prompt: every batch of the
    whole training set has errors, so every iteration trains."""
    base = world()

    def score(prompt: str, cont: str) -> float | None:
        if cont.lower() in TRUTH:
            i = int(re.search(r"s(\d+) text", prompt).group(1))
            return -0.1 if (cont.lower() == TRUTH[i % 2]) == (i % 2 == 0) else -3.0
        return None
    return ScriptedLM(generate_fn=base.generate_fn, score_fn=score)


@pytest.mark.parametrize("decay,lams", [(True, [0.8, 0.6, 0.4, 0.2]), (False, [0.8] * 4)])
def test_exploration_penalty_decays_linearly_across_iterations(decay, lams):
    """decay_logp_penalty (dln-reference §1.4 step 6): λ_t = λ·(1 − t/iters), here λ = 0.8, iters = 4; the hidden
    layer's reward at iteration t is ELBO_n − λ_t·penalty_n."""
    lm = always_wrong_world()
    tr = trainer("dln2", lm, iters=4, batch_size=8, logp_penalty=0.8, decay_logp_penalty=decay,
                 do_first_eval=False, val_freq=100)
    recs = [r for r in tr.run() if "layers" in r]
    assert [r["iteration"] for r in recs] == [0, 1, 2, 3]
    assert [r["logp_penalty"] for r in recs] == pytest.approx(lams)
    for r, lam in zip(recs, lams):
        h = r["layers"]["h"]
        assert h["penalty_weight"] == pytest.approx(lam) and len(set(h["penalty"])) > 1
        assert h["reward"] == pytest.approx([e - lam * p for e, p in zip(h["elbo"], h["penalty"])])
        assert r["layers"]["y"]["penalty"] is None                # the output layer has no exploration term

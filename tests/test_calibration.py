"""Calibrated choice layers (issue 14 §1): the MAP estimator against hand-computed numbers, a biased scripted model
that becomes correct only with calibration, candidate scoring with each candidate's own offsets, and the `.fit.dln`
round trip of the offsets."""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from dlc.app.training import offsets_by_label
from dlc.engine.calibration import apply_offsets, batch_offsets, estimate_offsets, fit_offsets, map_objective
from dlc.errors import CompileFailed
from dlc.train.evaluation import evaluate
from dlc.train.trainer import Trainer, calibration_set
from dlc.ir import Example
from dlc.lang.compiler import compile_file, compile_source
from dlc.lang.rewrite import rewrite_prompts
from dlc.lm.scripted import ScriptedLM

ROOT = Path(__file__).resolve().parent.parent
DLN1 = ROOT / "graphs" / "dln1.dln"
TRUTH = ("subjective", "objective")


# ---------------------------------------------------------------------------------------------------- estimator
def _bisect(f, lo: float, hi: float) -> float:
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(lo) * f(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def test_two_labels_match_the_hand_derived_stationary_point():
    """n copies of p = (0.9, 0.1) whose target is label 1, prior N(0, σ²): b = (−c, c) with
    n·(1 − s) = c/σ², s = sigmoid(log(0.1/0.9) + 2c) (d/dc of n·log s − c²/σ²)."""
    for n, sigma in ((8, 1.0), (8, 0.5), (100, 1.0)):
        lp = [math.log(0.9), math.log(0.1)]
        b = fit_offsets([lp] * n, [1] * n, sigma=sigma)

        def g(c: float) -> float:
            s = 1 / (1 + math.exp(-(math.log(0.1 / 0.9) + 2 * c)))
            return n * (1 - s) - c / sigma ** 2
        c = _bisect(g, 0.0, 50.0)
        assert b == pytest.approx([-c, c], abs=1e-7)
    # with 8 one-sided examples the prior keeps the offset near a nat (σ = 1: c = 1.74), not at infinity
    assert fit_offsets([[math.log(0.9), math.log(0.1)]] * 8, [1] * 8, sigma=1.0)[1] == pytest.approx(1.7391, abs=1e-3)


def test_estimator_invariants():
    lds = [[math.log(0.7), math.log(0.2), math.log(0.1)], [math.log(0.5), math.log(0.3), math.log(0.2)],
           [math.log(0.6), math.log(0.3), math.log(0.1)]]
    ys = [1, 2, 1]
    b = fit_offsets(lds, ys, sigma=1.0)
    assert sum(b) == pytest.approx(0.0, abs=1e-12)                              # the gauge the prior picks
    for d in ([0.01, 0, -0.01], [0, 0.01, -0.01], [0.01, -0.01, 0]):           # a maximum
        moved = [x + y for x, y in zip(b, d)]
        assert map_objective(lds, ys, moved, 1.0) < map_objective(lds, ys, b, 1.0)
    small = fit_offsets(lds, ys, sigma=0.1)
    assert max(map(abs, small)) < max(map(abs, b))                             # shrinkage towards 0
    assert fit_offsets(lds, ys, sigma=1.0, weights=[0, 0, 0]) == pytest.approx([0, 0, 0])
    assert fit_offsets([], [], sigma=1.0) == []
    # a weight of 2 is the same as the example listed twice
    assert fit_offsets(lds, ys, weights=[2, 1, 1]) == pytest.approx(fit_offsets(lds + lds[:1], ys + ys[:1]), abs=1e-8)
    cal = apply_offsets(lds[0], b)
    assert math.fsum(math.exp(x) for x in cal) == pytest.approx(1.0)
    assert apply_offsets(lds[0], None) == lds[0]


def test_batch_offsets_by_hand():
    """b_BC = −log of the mean label distribution, centred: p = (0.8, 0.2) and (0.6, 0.4) average to (0.7, 0.3),
    so b = ±(log 0.7 − log 0.3)/2, towards the label the model under-predicts; labels play no part."""
    lds = [[math.log(0.8), math.log(0.2)], [math.log(0.6), math.log(0.4)]]
    c = (math.log(0.7) - math.log(0.3)) / 2
    assert batch_offsets(lds) == pytest.approx([-c, c], abs=1e-12)
    assert estimate_offsets("batch", lds, [0, 0]) == estimate_offsets("batch", lds, [1, 1]) == batch_offsets(lds)
    # weights average the distributions: weight 3 on the first is (0.75, 0.25)
    w = (math.log(0.75) - math.log(0.25)) / 2
    assert batch_offsets(lds, [3, 1]) == pytest.approx([-w, w], abs=1e-12)
    assert batch_offsets(lds, [0, 0]) == [0.0, 0.0] and batch_offsets([]) == []
    # after the offsets the mean preference is gone: the second example now says label 1
    assert [max(range(2), key=lambda j: apply_offsets(d, batch_offsets(lds))[j]) for d in lds] == [0, 1]
    assert estimate_offsets("fit", lds, [0, 1], sigma=0.5) == fit_offsets(lds, [0, 1], sigma=0.5)
    with pytest.raises(ValueError, match="none"):
        estimate_offsets("none", lds, [0, 1])


# ---------------------------------------------------------------------------------------------------- a biased model
def examples(n: int, start: int = 0) -> list[Example]:
    return [Example({"x": f"s{i} text"}, TRUTH[i % 2], f"s{i}") for i in range(start, start + n)]


def biased_world() -> ScriptedLM:
    """Knows the answer (+1 nat for the true label) but prefers 'objective' by 1.5 nats: uncalibrated it always says
    objective (50%), and an offset between 0.5 and 2.5 nats towards 'subjective' makes it always right."""
    def score(prompt: str, cont: str) -> float | None:
        m = re.search(r"s(\d+) text", prompt)
        if cont.lower() not in TRUTH or m is None:
            return None
        truth = TRUTH[int(m.group(1)) % 2]
        return (-0.5 if cont.lower() == "objective" else -2.0) + (1.0 if cont.lower() == truth else 0.0)
    return ScriptedLM(score_fn=score)


def calibrated_graph(**fit):
    g = compile_file(DLN1, {"layer.y.calibration": "fit"})
    return dataclasses.replace(g, fit=dataclasses.replace(g.fit, **({"iters": 0} | fit)))


def test_a_biased_model_becomes_correct_only_with_calibration():
    lm = biased_world()
    plain = compile_file(DLN1)
    assert evaluate(plain, plain.prompts(), {"default": lm}, examples(20, 100)).accuracy == 0.5
    g = calibrated_graph()
    tr = Trainer(g, {"default": lm}, examples(16), examples(20, 100), g.fit)
    rec = tr.step()
    assert rec["calibration"]["kept"] and rec["calibration"]["dev_raw"] == 0.5 and rec["dev"] == 1.0
    b = tr.state.best_offsets["y"]
    assert 0.5 < b[0] - b[1] < 2.5 and tr.state.offsets == tr.state.best_offsets
    res = evaluate(g, tr.state.best_prompts, {"default": lm}, examples(20, 200), offsets=tr.state.best_offsets)
    assert res.accuracy == 1.0 and res.loglik is not None and all(x > math.log(0.5) for x in res.loglik)

    # the `.fit.dln` round trip: the offsets compile back into the layer and give the same calibrated accuracy
    src = DLN1.read_text(encoding="utf-8")
    text = rewrite_prompts(src, str(DLN1), {}, offsets_by_label(g, tr.state.best_offsets))
    assert re.search(r"^  offsets = \{ subjective: -?[\d.]+, objective: -?[\d.]+ \}$", text, re.M)
    g2 = compile_source(text, str(DLN1))
    assert g2.layers["y"].offset_vector() == pytest.approx(b, abs=1e-5)
    assert evaluate(g2, g2.prompts(), {"default": lm}, examples(20, 200)).accuracy == 1.0


def test_batch_calibration_corrects_the_bias_without_labels():
    """The same biased model with `calibration = batch`: the offsets come from the calibration set's mean label
    distribution (log(0.773/0.227) = 1.23 nats towards 'subjective' on a balanced set), which makes it always right;
    wrong targets on the calibration set change nothing, because the estimator never reads them."""
    lm = biased_world()
    g = dataclasses.replace(calibrated_graph(), layers={**calibrated_graph().layers, "y": dataclasses.replace(
        calibrated_graph().layers["y"], calibration="batch")})
    p_subj = [1 / (1 + math.exp(0.5)), 1 / (1 + math.exp(2.5))]      # subjective / objective example
    want = math.log((2 - sum(p_subj)) / sum(p_subj))
    found = []
    for train in (examples(16), [dataclasses.replace(e, target=TRUTH[1]) for e in examples(16)]):
        tr = Trainer(g, {"default": lm}, train, examples(20, 100), g.fit)
        rec = tr.step()
        b = tr.state.best_offsets["y"]
        assert rec["calibration"]["kept"] and rec["dev"] == 1.0
        assert b[0] - b[1] == pytest.approx(want, abs=1e-9)
        found.append(b)
    assert found[0] == found[1]
    res = evaluate(g, g.prompts(), {"default": lm}, examples(20, 200), offsets={"y": found[0]})
    assert res.accuracy == 1.0


def test_offsets_that_do_not_help_on_dev_are_dropped():
    """An unbiased model: the fitted offsets are tiny and do not beat the raw layer on dev, so none are kept."""
    def score(prompt: str, cont: str) -> float | None:
        m = re.search(r"s(\d+) text", prompt)
        if cont.lower() not in TRUTH or m is None:
            return None
        return -0.2 if cont.lower() == TRUTH[int(m.group(1)) % 2] else -2.0
    g = calibrated_graph()
    tr = Trainer(g, {"default": ScriptedLM(score_fn=score)}, examples(16), examples(20, 100),
                 dataclasses.replace(g.fit, validation="accuracy"))
    rec = tr.step()
    assert rec["calibration"]["kept"] is False and tr.state.best_offsets == {"y": []} and rec["dev"] == 1.0


@pytest.mark.parametrize("kind", ["fit", "batch"])
def test_candidates_are_scored_with_their_own_offsets(kind):
    """Training step on the biased model: each candidate's ELBO uses offsets fitted (MAP, or batch calibration) on
    the batch under that candidate, recorded in the trace; they move towards 'subjective' and beat the raw
    log-likelihood."""
    # no first validation: the batch is seen with the raw (always 'objective') layer, so it has errors
    g = calibrated_graph(iters=1, batch_size=8, num_p_samples=2, val_freq=1, do_first_eval=False)
    g = dataclasses.replace(g, layers={**g.layers, "y": dataclasses.replace(g.layers["y"], calibration=kind)})
    tr = Trainer(g, {"default": biased_world()}, examples(16), examples(8, 100), g.fit)
    r0 = tr.step()
    layer = r0["layers"]["y"]
    assert layer["offsets"] is not None and len(layer["offsets"]) == len(layer["candidates"])
    assert all(o[0] > o[1] for o in layer["offsets"])
    assert tr.state.offsets["y"] == layer["offsets"][layer["chosen_index"]]

    def raw_logp(i: int) -> float:     # log p(true label) without offsets, from the scripted scores
        subj, obj = (-1.0, -0.5) if i % 2 == 0 else (-2.0, 0.5 - 1.0)
        lse = math.log(math.exp(subj) + math.exp(obj))
        return (subj if i % 2 == 0 else obj) - lse
    raw_elbo = sum(raw_logp(int(e[1:])) for e in r0["batch"]) / len(r0["batch"])
    assert layer["elbo"][0] > raw_elbo
    if kind == "batch":       # b_subj − b_obj = log(mean p_obj / mean p_subj) over this batch, labels unused
        p_subj = [1 / (1 + math.exp(0.5 if int(e[1:]) % 2 == 0 else 2.5)) for e in r0["batch"]]
        want = math.log((len(p_subj) - sum(p_subj)) / sum(p_subj))
        assert all(o[0] - o[1] == pytest.approx(want, abs=1e-9) for o in layer["offsets"])


def test_calibration_set_is_drawn_with_the_seed():
    g = calibrated_graph()
    train = examples(100)
    a = calibration_set(train, dataclasses.replace(g.fit, calibration_size=10, seed=1))
    b = calibration_set(train, dataclasses.replace(g.fit, calibration_size=10, seed=1))
    c = calibration_set(train, dataclasses.replace(g.fit, calibration_size=10, seed=2))
    assert a == b and a != c and len(a) == 10
    assert calibration_set(train, dataclasses.replace(g.fit, calibration_size=-1)) == train


@pytest.mark.parametrize("setting,code", [
    ('offsets = { subjectiv: 0.5 }', "E328"),
    ('offsets = { subjective: "a lot" }', "E310"),
    ('offsets = { subjective: 1e999 }', "E311"),
    ('calibration = always', "E314"),
])
def test_offsets_are_checked_like_any_setting(setting, code, tmp_path):
    src = DLN1.read_text(encoding="utf-8").replace("  template = classify", f"  template = classify\n  {setting}")
    p = tmp_path / "net.dln"
    p.write_text(src, encoding="utf-8")
    with pytest.raises(CompileFailed) as e:
        compile_file(p)
    assert code in {err.code for err in e.value.errors}


@pytest.mark.parametrize("kind", ["fit", "batch"])
def test_calibration_needs_a_choice_layer(tmp_path, kind):
    p = tmp_path / "net.dln"
    p.write_text(f'input x\nlayer h(x) {{ calibration = {kind} }}\n'
                 'layer y(x, h) { output = choice { a: "a", b: "b" } }\noutput y\n', encoding="utf-8")
    with pytest.raises(CompileFailed) as e:
        compile_file(p)
    err = next(x for x in e.value.errors if x.code == "E329")
    assert f"calibration = {kind} needs a choice output" in err.message


def test_batch_calibration_compiles_on_a_choice_layer():
    g = compile_file(DLN1, {"layer.y.calibration": "batch"})
    assert g.layers["y"].calibration == "batch"


# ---------------------------------------------------------------------------------------------------- end to end
def test_offsets_reach_every_place_the_network_runs(tmp_path, monkeypatch, capsys):
    """`dlc fit` (scripted backend) -> result.json offsets == `<net>.fit.dln` offsets == what `dlc eval RUN`,
    `dlc eval NET.fit.dln` and `dlc run` apply; `dlc show RUN` prints them; and a run without offsets has none anywhere."""
    import json as _json

    from conftest import DATA, REPO
    from dlc.cli import main

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    net = tmp_path / "dln1.dln"
    src = (REPO / "graphs" / "dln1.dln").read_text()
    src = src.replace('data { task = "subj"  train_size = 400  dev_size = 60 }',
                      'data { task = "subj"  train_size = 24  dev_size = 12  test_size = 12 }')
    assert "test_size = 12" in src      # the sizes live in the file, so its .fit.dln evaluates the same examples
    net.write_text(src + "\nmodel default { backend = scripted }\n")
    small = ["--set", "fit.iters=0", "--set", "fit.validation=loglik", "--set", "fit.accept=best",
             "--set", "fit.calibration_keep=selection",
             "--data-dir", str(DATA), "--no-progress"]
    kept_any = dropped_any = False
    # seeds 1-2: calibrated (dev log-likelihood keeps offsets that fit); seed 3: calibration off, no offsets
    for seed, extra in ((1, []), (2, []), (3, ["--set", "layer.y.calibration=none"])):
        run = tmp_path / f"run{seed}"
        assert main(["fit", str(net), *small, *extra, "--set", f"fit.seed={seed}", "--run-dir", str(run)]) == 0
        capsys.readouterr()
        res = _json.loads((run / "result.json").read_text())
        fit_dln = (run / "dln1.fit.dln").read_text()
        kept = bool(res["offsets"])
        kept_any |= kept
        dropped_any |= not kept
        assert ("offsets = {" in fit_dln) == kept
        if kept:
            g = compile_file(run / "dln1.fit.dln")
            assert dict(g.layers["y"].offsets) == pytest.approx(res["offsets"]["y"], abs=1e-5)
        for target in (str(run), str(run / "dln1.fit.dln")):
            assert main(["eval", target, "--data-dir", str(DATA), "--json", "-"]) == 0
            rep = _json.loads(capsys.readouterr().out)
            assert rep["rows"][0]["accuracy"] == pytest.approx(res["test_accuracy"])
        assert main(["show", str(run)]) == 0
        assert ("offsets  y:" in capsys.readouterr().out) == kept
        # `dlc run` / dlc.predict on the test inputs reproduces the run's final test predictions
        from dlc.app.targets import load_network
        from dlc.app.training import load_data
        from dlc.app.infer import predict
        test = load_data(load_network(str(run)).graph, str(DATA)).test
        outs = predict(str(run), [dict(e.inputs) for e in test], hidden=False)
        assert [o["output"] for o in outs] == res["predictions"]["test"]["final"]
    assert kept_any and dropped_any


def test_posterior_weights_use_the_calibrated_child():
    """A hidden layer feeding a calibrated choice layer weighs its samples by the child's calibrated
    log p(target | h): the same hand-computed numbers as tests/test_backward.py, shifted by the offsets."""
    from dlc.engine.forward import forward
    from dlc.engine.hidden import infer_hidden
    from dlc.rng import Rng
    from test_backward import examples as bexamples, graph as bgraph, only, reasoning_lm

    g = only(bgraph("dln2"), "h", "prior_answer")
    c = dataclasses.replace(g.fit, num_h_samples=2)
    lm = reasoning_lm()
    ex = bexamples(2)                                      # targets: subjective, objective
    b = [0.7, -0.7]                                        # offsets of y: subjective +0.7, objective -0.7
    tr = forward(g, g.prompts(), {"default": lm}, ex)
    post = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(c.seed), 0, offsets={"y": b})["h"]
    for i, (bt, bo) in enumerate(((b[0], b[1]), (b[1], b[0]))):
        # good reasoning: the target's verbalizers score -0.2, the other label's -4.0 (both verbalizers alike)
        want = (-0.2 + bt) - math.log(math.exp(-0.2 + bt) + math.exp(-4.0 + bo))
        assert post.logp_children[i] == pytest.approx([want, want])
    raw = infer_hidden(g, g.prompts(), {"default": lm}, tr, c, Rng(c.seed), 0)["h"]
    assert raw.logp_children[0] == pytest.approx([-math.log1p(math.exp(-3.8))] * 2)


def test_a_set_validated_again_does_not_rerun_the_calibration_set():
    """The biased model is all right once calibrated, so the training batch has no errors, the prompt stays and the
    last validation sees the same set: its calibration fit comes from the memo, not from another forward pass."""
    lm = biased_world()
    g = calibrated_graph(iters=2, batch_size=8, num_p_samples=2, val_freq=1)
    tr = Trainer(g, {"default": lm}, examples(16), examples(20, 100), g.fit)
    recs = tr.run()
    assert [r.get("skipped") for r in recs[:2]] == ["no errors in the batch"] * 2
    assert [r["calibration"]["kept"] for r in recs] == [True, True, True]
    calibration_passes = [b for b in lm.batches if b[:2] == ("score", "y/forward") and b[2] == 16 * 4]
    assert len(calibration_passes) == 1

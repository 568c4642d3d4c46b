from __future__ import annotations

import math

import pytest

from dlc.ir import Label
from dlc.lm.base import ChatPrompt
from dlc.engine.labels import label_logdist_from, label_logdists, label_requests
from dlc.lm.scripted import ScriptedLM

LABELS = (Label("subjective", ("subjective", "Subjective")), Label("objective", ("objective", "Objective")))
SCORES = {"subjective": -1.0, "Subjective": -2.0, "objective": -3.0, "Objective": -3.0}


def lm() -> ScriptedLM:
    return ScriptedLM(score_fn=lambda prompt, cont: SCORES[cont])


def test_every_verbalizer_is_scored_as_a_continuation():
    p = ChatPrompt(user="ctx", prefix="Answer: ")
    reqs = label_requests(p, LABELS, "y/forward")
    assert [r.continuation for r in reqs] == ["subjective", "Subjective", "objective", "Objective"]
    assert all(r.prompt == p and r.tag == "y/forward" for r in reqs)


def test_logsumexp_aggregation_hand_computed():
    [dist] = label_logdists(lm(), ["ctx"], LABELS)
    e = math.exp
    p_subj = (e(-1) + e(-2)) / (e(-1) + e(-2) + 2 * e(-3))
    assert [math.exp(v) for v in dist] == pytest.approx([p_subj, 1 - p_subj])
    assert p_subj == pytest.approx(0.834811, abs=1e-6)


def test_max_aggregation_hand_computed():
    [dist] = label_logdists(lm(), ["ctx"], LABELS, agg="max")
    assert math.exp(dist[0]) == pytest.approx(1 / (1 + math.exp(-2)))


def test_reduction_sum_vs_mean_over_tokens():
    multi = ScriptedLM(score_fn=lambda p, c: [-1.0, -3.0] if c.startswith("s") else [-2.5])
    labels = (Label("s", ("s x",)), Label("o", ("o",)))
    [d_sum] = label_logdists(multi, ["c"], labels, reduction="sum")    # -4 vs -2.5
    [d_mean] = label_logdists(multi, ["c"], labels, reduction="mean")  # -2 vs -2.5
    assert d_sum[0] < d_sum[1] and d_mean[0] > d_mean[1]
    assert math.exp(d_mean[0]) == pytest.approx(1 / (1 + math.exp(-0.5)))


def test_batch_is_one_score_call_in_order():
    m = lm()
    dists = label_logdists(m, ["a", "b", "c"], LABELS, tag="t")
    assert len(dists) == 3 and m.batches == [("score", "t", 12)]
    res = m.score(label_requests("a", LABELS))
    assert label_logdist_from(res, LABELS) == pytest.approx(dists[0])

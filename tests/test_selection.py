"""Selection that does not chase noise (issue 14 §3): the paired t-test against scipy, the acceptance rules, and
the trainer keeping the initial prompt when a new one wins on dev only by chance."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from scipy import stats

from dlc.train.selection import compare, t_sf
from dlc.train.trainer import Trainer
from dlc.ir import Example
from dlc.lang.compiler import compile_file
from dlc.lm.scripted import ScriptedLM

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("t,df", [(0.5, 3), (2.1, 19), (-1.3, 7), (4.0, 1), (0.0, 10), (1.7, 99), (8.0, 40)])
def test_t_tail_matches_scipy(t, df):
    assert t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-9, abs=1e-14)


def test_paired_rule_against_a_hand_computed_t_test():
    new, best = [1, 1, 0, 1, 1, 1, 0, 1], [0, 1, 0, 1, 0, 1, 0, 1]
    d = [a - b for a, b in zip(new, best)]
    r = stats.ttest_1samp(d, 0.0, alternative="greater")
    c = compare(new, best, rule="paired", level=0.1)
    assert c.t == pytest.approx(r.statistic) and c.p == pytest.approx(r.pvalue)
    assert c.accepted == (r.pvalue < 0.1)
    assert compare(new, best, rule="paired", level=0.05).accepted == (r.pvalue < 0.05)
    # the paper's rule: a strictly higher mean wins; ties keep the best
    assert compare(new, best, rule="best").accepted and not compare(best, best, rule="best").accepted
    # one lucky example out of 20 is not evidence; a constant gain is
    assert compare([1] + [0] * 19, [0] * 20, rule="paired").accepted is False
    assert compare([0.5] * 20, [0.2] * 20, rule="paired").accepted is True
    assert compare([0.2] * 20, [0.5] * 20, rule="paired").accepted is False


def test_trainer_keeps_the_initial_prompt_when_a_new_one_wins_by_chance():
    """A proposal that fixes the training errors but one dev example out of 20 (and breaks none) is taken by the paper's rule and refused by
    the paired rule; validation by log-likelihood sees the same small gain and refuses it too."""
    g = compile_file(ROOT / "graphs" / "dln1.dln")
    truth = ("subjective", "objective")
    exs = [Example({"x": f"s{i} text"}, truth[i % 2], f"s{i}") for i in range(40)]

    def gen(prompt, r, i):
        return "LUCKY instruction" if r.tag == "y/propose" else None

    def score(prompt, cont):
        m = re.search(r"s(\d+) text", prompt)
        if cont.lower() not in truth or m is None:
            return None
        i = int(m.group(1))
        right = cont.lower() == truth[i % 2]
        if i % 5 == 0:                       # the examples the initial prompt gets wrong
            fixed = "LUCKY" in prompt and i <= 20     # all train errors, one dev error
            return -0.1 if right == fixed else -3.0
        return -0.1 if right else -3.0

    def fit(**kw):
        cfg = dataclasses.replace(g.fit, iters=1, batch_size=8, num_p_samples=2, val_freq=1, **kw)
        tr = Trainer(g, {"default": ScriptedLM(generate_fn=gen, score_fn=score)}, exs[:20], exs[20:], cfg)
        tr.run()
        return tr

    paper = fit(validation="accuracy", accept="best")
    assert paper.state.best_prompts["y"] == "LUCKY instruction"
    assert paper.state.history[-1]["dev"] == 0.85 and paper.state.history[0]["dev"] == 0.8
    for kw in ({"validation": "accuracy", "accept": "paired"}, {"validation": "loglik", "accept": "paired"}):
        tr = fit(**kw)
        assert tr.state.best_prompts["y"] == g.layers["y"].prompt, kw
        last = tr.state.history[-1]
        assert last["prompts"]["y"] == g.layers["y"].prompt

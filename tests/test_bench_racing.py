"""bench/racing.py's replay must simulate exactly what the engine's racing does (issue 15): on the same candidates
and scores, the simulated choice and per-candidate example counts equal the engine's `fit.racing = halving`."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from dlc.engine.forward import forward
from dlc.engine.prompts import update_layer
from dlc.lang.compiler import compile_source
from dlc.lm.scripted import ScriptedLM
from dlc.rng import Rng

from conftest import bench_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_optim import ONE, ex, paper  # noqa: E402



def _bench_racing():
    return bench_module("racing")


def _noisy_lm() -> ScriptedLM:
    """Candidates whose quality differs per example (so early rounds can mislead): the right label's log-prob under
    Q<j> on example i is -1 + ((j * 7 + i * 3) % 11) / 10."""
    def gen(p: str, r, i: int) -> str:
        return f"Q{r.seed % 13 + 1}"

    def score(p: str, c: str) -> float:
        i = next(int(t[1:]) for t in p.split() if t.startswith("e") and t[1:].isdigit())
        j = next((int(t[1:]) for t in p.split() if t.startswith("Q") and t[1:].isdigit()), 0)
        return -1.0 + ((j * 7 + i * 3) % 11) / 10 if c == ("yes", "no")[i % 2] else -1.2
    return ScriptedLM(generate_fn=gen, score_fn=score)


def test_replay_simulates_the_engines_racing(tmp_path):
    racing = _bench_racing()
    g = paper(compile_source(ONE))
    for seed in (1, 2, 3, 4):
        ups = {}
        for mode in ("off", "halving"):
            lm = _noisy_lm()
            c = dataclasses.replace(g.fit, num_p_samples=7, use_memory=0, racing=mode)
            tr = forward(g, g.prompts(), {"default": lm}, ex(12))
            ups[mode] = update_layer(g, "y", g.prompts(), [], {"default": lm}, tr, {}, c, Rng(seed), 0, 0.0)
        off, race = ups["off"], ups["halving"]
        assert off.candidates == race.candidates and len(off.candidates) > 2
        chosen, scored = racing.simulate(off.example_rewards)
        assert (chosen, scored) == (race.chosen_index, race.scored_on)
        # and through a trace file, as the replay reads them
        trace = tmp_path / f"t{seed}.jsonl"
        trace.write_text(json.dumps({"iteration": 1, "layers": {"y": off.to_json()}}) + "\n")
        res = racing.replay([trace])
        assert res["updates"] == 1 and res["rows"][0]["same"] == (chosen == off.chosen_index)
        assert 0 < res["cost"] < 1


def test_a_trace_without_example_rewards_is_an_error_and_racing_md_is_kept(tmp_path, capsys, monkeypatch):
    """Traces written before issue 15 carry no per-example rewards: the replay says so instead of writing a table
    of 0 updates over bench/RACING.md."""
    racing = _bench_racing()
    monkeypatch.setattr(racing, "BENCH", tmp_path)
    (tmp_path / "RACING.md").write_text("kept\n")
    trace = tmp_path / "old.jsonl"
    trace.write_text(json.dumps({"iteration": 0, "layers": {"y": {"candidates": ["a", "b", "c"],
                                                                      "rewards": [0.1, 0.2, 0.3]}}}) + "\n")
    assert racing.main(["replay", str(trace), "--write"]) == 1
    assert "rerun" in capsys.readouterr().err
    assert (tmp_path / "RACING.md").read_text() == "kept\n"


def test_the_other_rules_cut_where_they_say_and_the_frontier_starts_with_the_engines_rule(tmp_path):
    """The frontier compares cheaper ways of scoring with exhaustive scoring on the same recorded matrices: each
    rule's pick and cost follow from its definition, and its first row is the replay's own racing."""
    racing = _bench_racing()
    # candidate 3 leads on the first two examples and is the worst overall; candidate 2 is best overall
    r = [[0.0] * 8, [0.1, 0.0] * 4, [-0.5, -0.4] + [0.9] * 6, [1.0, 0.8] + [-1.0] * 6]
    assert racing.prefix(r, 2) == (3, [2, 2, 2, 2])
    assert racing.prefix(r, 8)[0] == 2
    # keeps the best half on 2 examples (3 and 1) and the incumbent: 2 is cut on its bad start
    assert racing.halving(r, 2, 0.5) == (1, [8, 8, 2, 8])
    assert racing.paired_elimination(r, 2, 0.5)[0] != 2        # a small z cuts 2 as well
    chosen, scored = racing.paired_elimination(r, 2, 100.0)   # a huge z cuts nothing: exhaustive at full cost
    assert (chosen, scored) == (2, [8, 8, 8, 8])
    assert racing.self_agreement([[1.0] * 8, [0.0] * 8]) == 1.0
    noisy = [[0.0] * 8, [1.0, -1.0] * 4]                # same mean: the pick depends on the draw
    s = racing.self_agreement(noisy)
    assert 0.2 < s < 0.8 and s == racing.self_agreement(noisy)
    trace = tmp_path / "t.jsonl"
    up = {"node": "y", "candidates": ["a", "b", "c", "d"], "chosen": "c", "chosen_index": 2, "example_rewards": r}
    trace.write_text(json.dumps({"iteration": 0, "layers": {"y": up}}) + "\n")
    res = racing.replay([trace])
    first = res["frontier"][0]
    assert "halving" in first["rule"] and first["agree"] == res["agree"] / res["updates"]
    assert abs(first["cost"] - res["cost"]) < 1e-12
    assert next(f for f in res["frontier"] if f["rule"].endswith("first 6 examples"))["cost"] == 0.75

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

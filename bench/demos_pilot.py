"""Pilot (issue 14): fixed demonstrations chosen on dev, with calibration — does it pay on the default model?

Not a dlc feature yet: this measures whether "demonstrations as learned parameters" (DSPy's LabeledFewShot with
random search, plus the calibrated choice layer of engine/calibration.py) beats 0-shot + calibration before anything
is built. Per (task, seed): M candidate sets of K class-balanced training examples (drawn with the seed, disjoint
from the calibration set), one set shared by every example (a shared prefix: cheap with prefix reuse); each set's
offsets fitted on the same calibration set as 0shot_cal (64 training examples, σ = 1) and kept only if they raise
dev accuracy; every set evaluated on dev (50) and test (100), so any selection rule can be read off afterwards.

    python bench/demos_pilot.py --tasks subj,disaster --seeds 42 [--k 4] [--m 3]
writes bench/demos14/<task>-s<seed>-k<k>.json (the progress lines: bench/demos14/pilot.log)

Result (2026-12-01, seed 42, 100 test examples; stopped after subj and two of disaster's three sets, because no
set came near 0-shot + calibration): subj 0-shot 0.57, + calibration 0.52, the three 4-shot sets (+ their
offsets) 0.49 / 0.52 / 0.48; disaster 0-shot 0.57, + calibration 0.64, two 4-shot sets 0.55 / 0.51. Demonstrations
lowered raw dev accuracy on both tasks (subj 0.44 -> 0.38, disaster 0.56 -> 0.52-0.54); the offsets recovered dev
(0.64-0.66) but not test. On this model a shared set of labelled demonstrations is not a parameter worth learning,
which agrees with the grid's random 5-shot cells (bench/RESULTS.md: 5-shot below 0-shot on 7 of 9 tasks).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from learning import net_text  # noqa: E402

import dlc  # noqa: E402
from dlc.app.models import close_lms, open_lms  # noqa: E402
from dlc.app.training import load_data  # noqa: E402
from dlc.engine.calibration import fit_offsets  # noqa: E402
from dlc.engine.forward import forward, resolve_targets  # noqa: E402
from dlc.engine.hidden import score_opts  # noqa: E402
from dlc.rng import Rng  # noqa: E402
from dlc.train.evaluation import EvalResult, _balanced_order, evaluate, recalibrate, shots_prefix  # noqa: E402
from dlc.train.trainer import calibration_set  # noqa: E402

OUT = BENCH / "demos14"


def run_set(graph, prompts, lms, examples, prefix):
    """The raw (uncalibrated) evaluation of `examples`, with one fixed demonstration prefix for every example."""
    if prefix is None:
        return evaluate(graph, prompts, lms, examples, config=graph.fit, offsets={graph.output: []})
    ex = resolve_targets(graph, examples)
    trace = forward(graph, prompts, lms, ex, temperature=0.0, rng=Rng(0), seed_path=("eval",),
                    opts=score_opts(graph.fit).with_offsets({graph.output: []}), input_prefix=[prefix] * len(ex))
    names = list(graph.layers[graph.output].output.label_names)
    raws = [list(r) for r in trace.nodes[graph.output].raw_logdist]
    base = EvalResult(accuracy=sum(trace.correct) / len(ex), predictions=list(trace.predictions),
                      targets=[e.target for e in ex], correct=list(trace.correct), ids=[e.id for e in ex],
                      per_class={}, confusion={}, loglik=None, raw_logdists=raws)
    return recalibrate(graph, base, [0.0] * len(names))     # fills loglik, per-class counts and the confusion


def cell(task: str, seed: int, k: int, m: int, data_dir: str) -> dict:
    graph = dlc.compile_text(net_text("0shot_cal", task, seed))
    splits = load_data(graph, data_dir)
    lms = open_lms(graph, cache_dir=str(BENCH / "out" / "cache"))
    prompts = {n: graph.layers[n].prompt for n in graph.order}
    names = list(graph.layers[graph.output].output.label_names)
    cal = calibration_set(splits.train, graph.fit)
    cal_ids = {e.id for e in cal}
    pool = [e for e in resolve_targets(graph, splits.train) if e.id not in cal_ids]
    sets = [None]
    root = Rng(seed)
    for j in range(m):
        order = _balanced_order(root.derive("demos", j), pool, k)
        sets.append([pool[i] for i in order])
    rows = []
    t0 = time.time()
    try:
        for j, demos in enumerate(sets):
            prefix = None if demos is None else shots_prefix(graph, demos)
            r_cal = run_set(graph, prompts, lms, cal, prefix)
            b = fit_offsets(r_cal.raw_logdists, [names.index(t) for t in r_cal.targets], sigma=graph.fit.calibration_sigma)
            dev = run_set(graph, prompts, lms, splits.dev, prefix)
            dev_c = recalibrate(graph, dev, b)
            kept = dev_c.accuracy > dev.accuracy
            test = run_set(graph, prompts, lms, splits.test, prefix)
            test_c = recalibrate(graph, test, b)
            use_dev, use_test = (dev_c, test_c) if kept else (dev, test)
            rows.append({"set": j, "demos": None if demos is None else [e.id for e in demos],
                         "demo_targets": None if demos is None else [e.target for e in demos],
                         "offsets": b, "kept": kept, "dev_raw": dev.accuracy, "dev": use_dev.accuracy,
                         "dev_loglik": use_dev.loglik, "test_raw": test.accuracy, "test": use_test.accuracy,
                         "test_correct": use_test.correct, "test_ids": use_test.ids,
                         "test_raw_correct": test.correct, "dev_correct": use_dev.correct,
                         "seconds": round(time.time() - t0, 1)})
            print(task, seed, j, f"dev {dev.accuracy:.2f}->{use_dev.accuracy:.2f} test {test.accuracy:.2f}->"
                  f"{use_test.accuracy:.2f}  {time.time() - t0:.0f}s", flush=True)
    finally:
        close_lms(lms)
    return {"task": task, "seed": seed, "k": k, "m": m, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--m", type=int, default=3)
    ap.add_argument("--data-dir", required=True)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for seed in [int(s) for s in a.seeds.split(",")]:
        for task in a.tasks.split(","):
            f = OUT / f"{task}-s{seed}-k{a.k}.json"
            if f.exists():
                continue
            res = cell(task, seed, a.k, a.m, a.data_dir)
            f.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batch calibration against the fitted offsets (issue 14 §1: is there a better estimator of b?).

The date cells (bench/LEARNING_NOTES.md) showed the MAP offsets learning the *label prior of the training
pool*, which on the BBH tasks differs from the test file's. Batch calibration (Zhou et al., "Batch Calibration",
ICLR 2024) estimates the same per-label offset without labels, by assuming the labels are equally likely:

    b_BC = −log( (1/n) Σ_i p_LM(label | x_i) )          (then centred; the gauge does not matter)

i.e. it removes the model's average preference, whatever the data's prior. Run on the calibration set's inputs (the
same 64 training examples the MAP fit uses, labels ignored) it is what `calibration = batch` does in `dlc fit`; run
on the test inputs themselves (transductive, still no labels) it is the paper's variant, reported as a diagnostic.

The initial prompt's raw label distributions on the 0shot_cal cells' calibration set, dev and test come through the
shared LLM cache of bench/learning.py (computed once when missing, then no new LLM work). Each estimator is reported
kept always and kept by the default rule (only when it raises dev accuracy), paired against 0-shot on the same 100
test examples, as bench/LEARNING.md does.

    python bench/batch_calibration.py measure [--tasks trec,subj] [--seeds 13,42,25]   # bench/batch_calibration.json
    python bench/batch_calibration.py report                                           # bench/BATCH_CALIBRATION.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from learning import SEEDS, SHORT, mean_ci  # noqa: E402
from grid import RUN_ORDER  # noqa: E402

from dlc.engine.calibration import batch_offsets, fit_offsets  # noqa: E402

RECORDS = BENCH / "batch_calibration.json"
ESTIMATORS = ("map", "batch", "batch_test")
RULES = ("always", "best")


def measure(tasks: Sequence[str], seeds: Sequence[int], data_dir: str) -> dict[str, Any]:
    from calibration_ablation import decide, distributions
    from dlc.train.evaluation import recalibrate

    out: dict[str, Any] = {}
    for task in tasks:
        for seed in seeds:
            g, cal, dev, test = distributions(task, seed, data_dir)
            names = list(g.layers[g.output].output.label_names)
            y = [names.index(t) for t in cal.targets]
            cell: dict[str, Any] = {"0shot": {"test": [int(c) for c in test.correct], "dev": dev.accuracy}}
            for est, b in (("map", fit_offsets(cal.raw_logdists or [], y, sigma=1.0)),
                           ("batch", batch_offsets(cal.raw_logdists or [])),
                           ("batch_test", batch_offsets(test.raw_logdists or []))):
                t, d = recalibrate(g, test, b), recalibrate(g, dev, b)
                kept = decide("best/accuracy", g, dev, b)
                cell[f"{est}/always"] = {"test": [int(c) for c in t.correct], "dev": d.accuracy, "offsets": b}
                cell[f"{est}/best"] = {"test": [int(c) for c in (t if kept else test).correct],
                                       "dev": (d if kept else dev).accuracy, "kept": kept}
            out[f"{task}|{seed}"] = cell
            print(task, seed, {k: round(sum(v["test"]) / len(v["test"]), 3) for k, v in cell.items()}, flush=True)
    return out


def paired(cells: Sequence[dict[str, Any]], method: str) -> tuple[float, float | None]:
    """Mean over test examples of (method correct − 0-shot correct), each averaged over the seeds, ± 95% t."""
    n = len(cells[0]["0shot"]["test"])
    diffs = [sum(c[method]["test"][i] - c["0shot"]["test"][i] for c in cells) / len(cells) for i in range(n)]
    return mean_ci(diffs)


def with_dev_pick(cell: dict[str, Any]) -> dict[str, Any]:
    """Adds "dev picks": per seed, whichever of map/best and batch/best has the higher dev accuracy (ties: map),
    i.e. the estimator itself chosen on dev like the offsets are."""
    pick = cell["batch/best"] if cell["batch/best"]["dev"] > cell["map/best"]["dev"] else cell["map/best"]
    return {**cell, "dev picks": pick}


def report(records: dict[str, Any]) -> str:
    tasks = [t for t in RUN_ORDER if any(k.startswith(t + "|") for k in records)]
    methods = [f"{e}/{r}" for e in ESTIMATORS for r in RULES] + ["dev picks"]
    tally = {m: [0, 0, 0] for m in methods}
    means: dict[str, list[float]] = {m: [] for m in methods}
    rows = []
    for t in tasks:
        cells = [with_dev_pick(v) for k, v in records.items() if k.split("|")[0] == t]
        base = sum(sum(c["0shot"]["test"]) / len(c["0shot"]["test"]) for c in cells) / len(cells)
        row = [SHORT.get(t, t), f"{100 * base:.1f}"]
        for m in methods:
            mu, h = paired(cells, m)
            means[m].append(mu)
            sig = h is not None and abs(mu) > h + 1e-12
            tally[m][0 if sig and mu > 0 else 2 if sig else 1] += 1
            txt = f"{100 * mu:+.1f} ± {100 * (h or 0.0):.1f}"
            row.append(f"**{txt}**" if sig else txt)
        rows.append("| " + " | ".join(row) + " |")
    n_seeds = len({k.split("|")[1] for k in records})
    lines = ["# Batch calibration against the fitted offsets (issue 14)", "",
             "Generated by `python bench/batch_calibration.py report` from bench/batch_calibration.json. Default "
             "model, each task's initial prompt, the 0shot_cal cells' splits (calibration set 64 of 200 training "
             f"examples, dev 50, test 100), {n_seeds} seeds. `map`: the MAP offsets `dlc fit` uses (σ = 1); `batch`: "
             "−log of the mean label distribution over the calibration set's inputs (labels unused); `batch_test`: "
             "the same over the test inputs (transductive, a diagnostic). `always`: offsets always applied; `best`: "
             "kept only when they raise dev accuracy (the default rule); `dev picks`: per seed, whichever of "
             "map/best and batch/best has the higher dev accuracy (ties: map).", "",
             "Paired difference against 0-shot on the same 100 test examples (points; each example averaged over the "
             "seeds; ± 95% t over examples; **bold**: the interval excludes 0):", "",
             "| task | 0-shot % | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods), *rows,
             "| mean over tasks | | " + " | ".join(f"{100 * sum(v) / len(v):+.1f}" for v in means.values()) + " |", "",
             "Tasks above / within noise / below 0-shot: " + "; ".join(f"{m} {'/'.join(map(str, v))}"
                                                                     for m, v in tally.items()) + ".", "",
             "The label distributions were computed on this machine from the cells' splits (the LLM cache of the "
             "0shot_cal cells did not move with them), so the 0-shot and `map` columns differ from bench/LEARNING.md "
             "by near-tie answers; every column here comes from the same distributions.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--tasks", default=",".join(RUN_ORDER))
    m.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    m.add_argument("--data-dir", default=os.environ.get("DLC_DATA_DIR", str(BENCH.parent.parent / "shared" / "data")))
    sub.add_parser("report")
    a = ap.parse_args(argv)
    if a.cmd == "measure":
        recs = measure(a.tasks.split(","), [int(s) for s in a.seeds.split(",")], a.data_dir)
        RECORDS.write_text(json.dumps(recs, indent=0) + "\n")
    text = report(json.loads(RECORDS.read_text()))
    (BENCH / "BATCH_CALIBRATION.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

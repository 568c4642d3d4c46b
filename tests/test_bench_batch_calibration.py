"""bench/batch_calibration.py's report: the paired arithmetic and the tallies (the estimator: test_calibration.py)."""
from __future__ import annotations

from conftest import bench_module


def _cell(base: list[int], **methods: list[int]) -> dict:
    cell = {"0shot": {"test": base, "dev": 0.5}}
    for m in ("map", "batch", "batch_test"):
        for r in ("always", "best"):
            cell[f"{m}/{r}"] = {"test": methods.get(f"{m}_{r}", base), "dev": 0.5}
    return cell


def test_report_pairs_examples_over_seeds():
    bc = bench_module("batch_calibration")
    base = [0, 1] * 10
    better = [1, 1] * 10                                  # +10 of 20 on every seed: +50 points, no variance
    worse = [0, 0] * 10                                   # -50 points
    recs = {"trec|13": _cell(base, map_always=better, batch_always=worse),
            "trec|42": _cell(base, map_always=better, batch_always=worse)}
    text = bc.report(recs)
    assert "| Trec | 50.0 | **+50.0 ± " in text
    row = next(line for line in text.splitlines() if line.startswith("| Trec"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[2].startswith("**+50.0") and cols[3] == "+0.0 ± 0.0" and cols[4].startswith("**-50.0")
    assert "map/always 1/0/0; map/best 0/1/0; batch/always 0/0/1" in text
    assert "| mean over tasks | | +50.0 | +0.0 | -50.0 | +0.0 | +0.0 | +0.0 | +0.0 |" in text


def test_dev_picks_the_estimator_with_the_higher_dev_accuracy():
    bc = bench_module("batch_calibration")
    cell = _cell([0, 1] * 10, map_best=[1, 1] * 10, batch_best=[0, 0] * 10)
    assert bc.with_dev_pick(cell)["dev picks"]["test"] == [1, 1] * 10          # a tie goes to map
    cell["batch/best"]["dev"] = 0.6
    assert bc.with_dev_pick(cell)["dev picks"]["test"] == [0, 0] * 10

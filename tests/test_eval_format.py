"""`dlc eval --seeds` output: seeds with the same result are one block, also when a class is absent from the split
(its accuracy is NaN, and NaN != NaN used to print the same block once per seed)."""
from __future__ import annotations

import json

from dlc.app.evaluate import EvalReport
from dlc.commands.eval import format_eval
from dlc.report.stats import report_from_counts


def test_identical_seeds_with_an_absent_class_print_one_block():
    cr = report_from_counts({"a": {"a": 2}, "b": {"a": 2}}, ["a", "b", "c"])     # class c absent: NaN
    assert cr.per_class["c"]["accuracy"] != cr.per_class["c"]["accuracy"]
    rep_json = cr.to_json()
    rows = [{"target": "runs/x", "seed": s, "accuracy": 0.5, "n": 4, "report": json.loads(json.dumps(rep_json))} for s in (13, 42, 25)]
    rep = EvalReport(split="test", seeds=(13, 42, 25), rows=rows,
                     summary={"accuracy": {"n": 3, "mean": 0.5, "ci95": 0.0}})
    out = format_eval(rep)
    assert out.count("== runs/x") == 1 and "seeds 13, 42, 25 (identical)" in out
    different = [dict(r) for r in rows]
    other = report_from_counts({"a": {"a": 2}, "b": {"b": 2}}, ["a", "b", "c"]).to_json()
    different[1] = dict(different[1], report=other)
    out = format_eval(EvalReport(split="test", seeds=(13, 42, 25), rows=different, summary=rep.summary))
    assert out.count("== runs/x") == 3

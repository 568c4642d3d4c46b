"""bench/grid_report.py: RESULTS.md from the grid's cells — seeds, intervals, the majority row, the peer baseline and
what training changed are the records' arithmetic, never invented."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import bench_module


@pytest.fixture(scope="module")
def report():
    yield bench_module("grid_report")
    sys.modules.pop("bench_grid_report", None)


def _rec(method, task, seed, acc, *, prompts=None, before=None, confusion=None, **extra):
    return {"cell": f"{method}-{task}-s{seed}", "method": method, "task": task, "seed": seed, "test_accuracy": acc,
            "dev_accuracy": acc, "prompts": prompts, "baseline": {"test_accuracy": 0.5, "prompts": before},
            "test_confusion": confusion, "cost": {"fit_seconds": 60.0}, **extra}


def test_report_formats_seeds_majority_and_the_peer(report, tmp_path):
    """3 seeds: mean ± t half-width; 2 seeds: [min-max]; 0-shot: det.; the majority row comes from a confusion
    matrix; DSPy is shown beside its own unoptimised program; `learned` says whether a prompt changed."""
    conf = {"subjective": {"subjective": 10, "objective": 16}, "objective": {"subjective": 4, "objective": 10}}
    recs = [_rec("0shot", "subj", 42, 0.5, confusion=conf),
            _rec("dln1", "subj", 13, 0.5, prompts={"y": "a"}, before={"y": "a"}),
            _rec("dln1", "subj", 42, 0.6, prompts={"y": "b"}, before={"y": "a"}),
            _rec("dln1", "subj", 25, 0.7, prompts={"y": "c"}, before={"y": "a"}),
            _rec("dln1", "trec", 42, 0.4), _rec("dln1", "trec", 13, 0.6),
            _rec("dspy-copro", "subj", 42, 0.3, prompts={"y": "new"}, prompt_prefix="",
                 settings={"initial_instruction": "old", "dlc_threads": 1})]
    recs[-1]["baseline"]["test_accuracy"] = 0.35
    cells = tmp_path / "cells"
    cells.mkdir()
    for r in recs:
        (cells / f"{r['cell']}.json").write_text(json.dumps(r))
    text = report.report(cells_dir=cells, results=tmp_path / "R.md", plots_dir=tmp_path / "plots",
                       notes=tmp_path / "none.md")
    table1 = text.split("## 1.")[1].split("## 2.")[0]
    cols = ["Hyper.", "Nav.", "Date.", "Logic.7", "Mpqa", "Trec", "Subj"]

    def cell(row_start: str, col: str) -> str:
        row = next(line for line in table1.splitlines() if line.startswith(row_start))
        return row.split("|")[cols.index(col) + 2].strip()

    assert cell("| majority label", "Subj") == "65.0"                 # 26 of 40 true labels are 'subjective'
    assert cell("| 0-shot (Qwen", "Subj") == "50.0 (det.)"
    # mean 0.6, sd 0.1, t(2) = 4.303: half-width 4.303 * 0.1 / sqrt(3) = 0.2484
    assert cell("| DLN-1 (Qwen", "Subj") == "60.0±24.8"
    assert cell("| DLN-1 (Qwen", "Trec") == "50.0 [40.0–60.0] (2)"
    peer = text.split("## 4.")[1].split("## Cost")[0]
    assert "| DSPy COPRO (Qwen2.5-Coder-1.5B) | 30.0 (1) |" in peer
    assert "| DSPy program before COPRO (Qwen2.5-Coder-1.5B) | 35.0 (1) |" in peer
    cost = {line.split("|")[1].strip(): [x.strip() for x in line.split("|")[2:-1]]
            for line in text.split("## Cost of every cell")[1].splitlines() if line.startswith("| ")}
    assert cost["dln1-subj-s13"][2] == "no" and cost["dln1-subj-s42"][2] == "yes"
    assert cost["dspy-copro-subj-s42"][2] == "yes" and cost["dspy-copro-subj-s42"][9] == "1"   # learned, threads
    assert "DSPy baseline is not part of" in text
    # paired: 2 of the 3 subj cells changed (+10, +20 points over the 0.5 start); trec cells record no prompts
    assert "- DLN-1: the prompts changed in 2 of 3 cells" in text and "test +10.0…+20.0 (mean +15.0" in text


def test_paired_change_against_the_start_is_per_example_arithmetic(report):
    """Two seeds on the same 4 test examples: per example (final − initial correct) averaged over the seeds, then
    mean ± t half-width over the examples; cells without per-example predictions are left out and counted out."""
    ids, targets = ["a", "b", "c", "d"], ["yes", "no", "yes", "no"]

    def rec(seed, final, baseline):
        return _rec("dln2", "navigate", seed, 0.5, test_predictions={"ids": ids, "targets": targets,
                                                                     "final": final, "baseline": baseline})

    recs = [rec(42, ["yes", "no", "no", "no"], ["no", "no", "no", "no"]),      # +100 on a
            rec(13, ["yes", "no", "yes", "no"], ["no", "no", "no", "no"]),     # +100 on a and c
            _rec("dln2", "navigate", 25, 0.5)]                                 # no predictions: not counted
    ci, seeds = report.paired_vs_start(recs, "dln2", "navigate")
    assert seeds == 2
    # per example: a +100, b 0, c +50, d 0 -> mean 37.5, sd 47.87, t(3) 3.182: half-width 76.2
    assert round(ci.mean, 1) == 37.5 and round(ci.half_width, 1) == 76.2
    assert report.paired_vs_start(recs, "dln2", "subj") is None

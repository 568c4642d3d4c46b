"""bench/scoring.py's report: refuses without records, and its rows are the records' arithmetic."""
from __future__ import annotations

import pytest

from conftest import bench_module


def _rec(task: str, exact_s: float, merged_s: float, kept: tuple[int, int]) -> dict:
    return {"task": task, "requests": 10, "load_before": 0.1, "load_after": 1.9, "cpu": "X", "threads": 2,
            "exact": {"wall_seconds": exact_s, "decodes": 8, "decoded_tokens": 1000},
            "merged": {"wall_seconds": merged_s, "decodes": 2, "decoded_tokens": 1010},
            "max_abs_diff": 0.2, "mean_abs_diff": 0.01, "ref_vs_exact_max": 0.1, "answers": 16,
            "flips": [{"exact": "a", "merged": "b", "exact_margin": 0.01}] if kept[0] != kept[1] else [],
            "kept_exact": kept[0], "kept_merged": kept[1], "reward_exact": [-1.0, -1.25, -0.5]}


def test_report_refuses_without_records():
    scoring = bench_module("scoring")
    with pytest.raises(SystemExit, match="no records"):
        scoring.report([])


def test_report_rows_and_totals():
    scoring = bench_module("scoring")
    text = scoring.report([_rec("t1", 30.0, 20.0, (2, 2)), _rec("t2", 10.0, 20.0, (2, 0))])
    assert "| t1 | 10 | 0.1/1.9 | 30.0 | 20.0 | 1.50× |" in text
    assert "| t2 | 10 | 0.1/1.9 | 10.0 | 20.0 | 0.50× |" in text
    assert "2 / 0 (exact rewards 0.500 apart)" in text           # -0.5 - (-1.0)
    assert "exact 40 s, merged 40 s (**1.00×**; per call 0.50× to 1.50×)" in text
    assert "1 of 32 answers differ; the candidate kept is the same in 1 of 2 calls" in text

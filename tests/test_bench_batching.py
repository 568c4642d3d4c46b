"""bench/batching.py (issue 15): the bound on a cell's speed-up is the arithmetic its docstring states, and a report
without measurements refuses to overwrite bench/BATCHING.md."""
from __future__ import annotations

import json

import pytest

from conftest import bench_module


def _bench_batching():
    return bench_module("batching")


PHASES = {"generate:x": {"decoded_tokens": 1500, "completion_tokens": 500, "seconds": 90.0},
          "score:y": {"decoded_tokens": 3000, "completion_tokens": 0, "seconds": 70.0}}
CURVES = [{"prompt_eval_tok_per_s": 50.0, "tok_per_s": {"1": 10.0, "16": 20.0, "32": 25.0}},
          {"prompt_eval_tok_per_s": 40.0, "tok_per_s": {"1": 9.0, "16": 18.0, "32": 24.0}}]


def _before(wall: float) -> dict:
    return {"wall_seconds": wall, "completion_tokens": 500, "backend": {"decoded_tokens": 4500}}


def test_the_bound_uses_the_best_rates_measured():
    bound = _bench_batching().bound
    text = "\n".join(bound(_before(480.0), CURVES))
    # 4000 prompt tokens at 50 tok/s + 500 generated at 25 tok/s (32 rows) = 80 + 20 = 100 s: 4.80x at most
    assert "need 100 s" in text and "**4.80×**" in text and "32 rows" in text and "3× (" not in text
    # before 240 s: 2.40x at most; 3x = 80 s is all prompt evaluation at the best rate: no time left to generate
    text = "\n".join(bound(_before(240.0), CURVES))
    assert "**2.40×**" in text and "prompt evaluation alone faster than 50 tok/s" in text
    # before 270 s: 2.70x; 3x = 90 s leaves 10 s for 500 tokens: 50 tok/s, 2.0x the best rate
    text = "\n".join(bound(_before(270.0), CURVES))
    assert "**2.70×**" in text and "generation at 50 tok/s, 2.0× the best measured rate" in text


def test_a_report_without_measurements_keeps_batching_md(tmp_path, monkeypatch):
    b = _bench_batching()
    monkeypatch.setattr(b, "OUT", tmp_path / "records")
    monkeypatch.setattr(b, "BENCH", tmp_path)
    (tmp_path / "BATCHING.md").write_text("kept\n")
    with pytest.raises(SystemExit, match="no measurements"):
        b.main(["report"])
    assert (tmp_path / "BATCHING.md").read_text() == "kept\n"


def test_the_report_includes_the_bound_when_both_cells_were_measured(tmp_path, monkeypatch):
    b = _bench_batching()
    monkeypatch.setattr(b, "OUT", tmp_path)
    curve = {"model": "default", "threads": 2, "prompt_tokens": 106, "load_before": 0.5, "load_after": 1.0,
             "time": "2026-12-01 13:30:32", "cpu": "AMD EPYC, AVX2",
             "step_ms": {str(n): 10.0 * n for n in b.ROWS}, "tok_per_s": {str(n): 10.0 + n for n in b.ROWS},
             "prompt_eval_tok_per_s": 50.0}
    cell = {"wall_seconds": 200.0, "completion_tokens": 500, "load_before": 1.0, "load_after": 2.0,
            "dev": [0.4, 0.5], "test": [0.4, 0.4],
            "backend": {"phases": PHASES, "decoded_tokens": 4500, "decode_seconds": 150.0}}
    (tmp_path / "curve-default.json").write_text(json.dumps(curve))
    before = {**cell, "label": "before", "wall_seconds": 480.0,
              "backend": {"decoded_tokens": 4500, "decode_seconds": 450.0}}
    (tmp_path / "cell-before.json").write_text(json.dumps(before))
    (tmp_path / "cell-after.json").write_text(json.dumps({**cell, "label": "after"}))
    text = b.report()
    assert "Taken on: AMD EPYC, AVX2 (2026-12-01), 2 threads." in text
    # equal work here: 4500 tokens in 450 s of decoding before, 150 s after
    assert "| before | 480.0 | 1.00× | 500 | 4,500 | 10.0 | 1.00× |" in text
    assert "| after | 200.0 | 2.40× | 500 | 4,500 | 30.0 | 3.00× |" in text
    # best generation rate: 42 tok/s at 32 rows -> 4000/50 + 500/42 = 91.9 s
    assert "need 92 s" in text and "**5.22×**" in text


def test_the_limit_by_shape_uses_the_best_rate_measured_up_to_each_shape(tmp_path, monkeypatch, capsys):
    """A phase's limit by shape: its tokens of each llama_decode shape at llama.cpp's best rate for that shape
    (the best measured at any size up to the shape's rows), over the phase's seconds."""
    b = _bench_batching()
    curve = {"model": "default", "threads": 2, "prompt_tokens": 106, "cpu": "AMD EPYC, AVX2",
             "prompt_eval_tok_per_s": 50.0, "tok_per_s": {"1": 10.0, "4": 16.0, "8": 14.0, "16": 20.0, "32": 25.0}}
    chunks = {"tok_per_s": {"exact": {"16": 30.0, "32": 40.0, "64": 45.0, "128": 44.0}}}
    measured = b.measured_rates([curve], [chunks])

    def rate(shape: str) -> float:
        return b.best_rate(measured, shape)

    assert rate("many:1") == 10.0 and rate("many:8") == 16.0                   # never below a smaller shape's best
    assert rate("one:16") == rate("many:16") == 30.0 and rate("many:64") == 45.0          # of either kind
    assert rate("one:2") == 10.0 and rate("one:32") == 40.0 and rate("one:128") == 45.0
    assert rate("one:256") == rate("many:512") == rate("one:4096") == 50.0     # the one-chunk rate, however large
    cell = {"machine": {"cpu": "AMD EPYC, AVX2"},
            "cost": {"phases": {"score:x": {"seconds": 26.0, "decoded_tokens": 600, "completion_tokens": 0}},
                     "decode_shapes": {"score:x": {"one:32": {"tokens": 200, "seconds": 4.0, "calls": 8},
                                                   "one:256": {"tokens": 400, "seconds": 5.0, "calls": 2}}}}}
    # 200 / 40 + 400 / 50 = 13 s of limit over the phase's 26 s (50%) and its 9 s inside llama_decode (144%)
    text = "\n".join(b.shape_table({"c-s1": cell["cost"]}, [curve], [chunks]))
    assert "| c-s1 | score:x | 600 | one:256 400, one:32 200 |  |  | 26.0 | 13.0 | 50% | 144% | |" in text
    monkeypatch.setattr(b, "OUT", tmp_path / "rec")
    monkeypatch.setattr(b, "CELLS", tmp_path / "cells")
    monkeypatch.setattr(b, "SCORING", tmp_path / "scoring")
    (tmp_path / "scoring").mkdir()
    (tmp_path / "rec").mkdir()
    (tmp_path / "cells").mkdir()
    (tmp_path / "rec" / "curve-default.json").write_text(json.dumps(
        {**curve, "load_before": 0.5, "load_after": 1.0, "time": "2026-12-02 02:00:00",
         "step_ms": {str(n): 1.0 for n in b.ROWS}, "tok_per_s": {str(n): 10.0 + n for n in b.ROWS}}))
    (tmp_path / "scoring" / "chunks-default.json").write_text(json.dumps({**chunks, "cpu": "AMD EPYC, AVX2"}))
    (tmp_path / "cells" / "c-s1.json").write_text(json.dumps(cell))
    other = {**cell, "machine": {"cpu": "another CPU"}}
    (tmp_path / "cells" / "c-s2.json").write_text(json.dumps(other))
    text = b.report()
    assert "## The limit by batch shape" in text and "| grid c-s1 | score:x |" in text
    assert "c-s2" not in text                        # a cell from another machine is not held to this curve
    noted = {**cell, "machine": {"cpu": "AMD EPYC, AVX2", "note": "pytest ran beside it"}}
    (tmp_path / "cells" / "c-s3.json").write_text(json.dumps(noted))
    assert "c-s3" not in b.report()                  # nor one that did not run alone
    # a batching cell that booked its shapes (`cell --label`) is in the table too
    (tmp_path / "rec" / "cell-shapes.json").write_text(json.dumps(
        {"label": "shapes", "cpu": "AMD EPYC, AVX2", "time": "2026-12-02 03:00:00", "threads": 2,
         "backend": cell["cost"]}))
    assert "| batching cell-shapes | score:x | 600 |" in b.report()
    # comparing cells needs the before code; running this tree's alone does not
    with pytest.raises(SystemExit):
        b.main(["cell"])
    assert "--before" in capsys.readouterr().err


def test_rows_with_logits_and_long_contexts_get_the_limit_of_their_own_shape():
    """A shape that booked its rows with logits and their positions: rows without logits at the best of anything
    up to its rows, rows with logits at generation steps ("many") or at prompt evaluation with every row's logits
    ("one"), steps from the curve measured at the longest shared prompt not longer than the rows' mean context."""
    b = _bench_batching()
    short = {"threads": 2, "prompt_tokens": 100, "cpu": "X", "prompt_eval_tok_per_s": 50.0,
             "tok_per_s": {"1": 10.0, "16": 25.0, "32": 28.0}}
    long = {**short, "prompt_tokens": 600, "prompt_eval_tok_per_s": 45.0, "tok_per_s": {"1": 9.0, "16": 20.0}}
    chunks = {"prefix_tokens": 100, "tok_per_s": {"exact": {"16": 30.0, "256": 48.0},
                                                  "exact_logits": {"16": 26.0, "256": 40.0}}}
    later = {"prefix_tokens": 500, "text_tokens": 512, "tok_per_s": {"exact": {"256": 38.0}}}
    m = b.measured_rates([short, long], [chunks, later])
    # contexts: steps at their prompts (100, 600), the one-chunk prompt evals at 128 (positions 0-255), chunks at
    # prefix + half the text (100 + 128 = 228, 500 + 256 = 756)
    assert sorted({(r.kind, r.context) for r in m}) == [("prompt", 128), ("prompt", 228), ("prompt", 756),
                                                        ("step", 100), ("step", 600)]
    assert b.best_rate(m, "many:16") == 30.0                        # blind: the best of any kind and context
    assert b.best_rate(m, "many:16", True, 800.0) == 20.0           # steps after the 600-token prompt
    assert b.best_rate(m, "many:16", True, 300.0) == 25.0           # 600 > 300: the 100-token curve
    assert b.best_rate(m, "many:16", False, 800.0) == 30.0          # rows without logits: prompt evaluation
    assert b.best_rate(m, "one:256", True, 300.0) == 40.0           # one sequence, every row's logits
    assert b.best_rate(m, "one:16", True, 800.0) == 26.0            # that beats the long-context step (20)
    assert b.best_rate(m, "one:512", False, 100.0) == 50.0          # nothing below: the shortest, the one-chunk's
    assert b.best_rate(m, "one:512", False, 300.0) == 48.0          # 256 rows after the 100-token prefix
    # after 800: 38 for 256 rows after the 500-token prefix; but 256 rows with logits were measured only after the
    # 100-token one (40), and every measured shape counts at its nearest context: missing coverage stays generous
    assert b.best_rate(m, "one:512", False, 800.0) == 40.0
    assert b.best_rate(m, "one:512") == 50.0
    # 16 rows with logits of which 12 at 20 tok/s and 4 without at 30: 0.6 + 0.1333 s
    row = {"tokens": 16, "seconds": 1.0, "calls": 1, "logits": 12, "context": 16 * 700}
    assert b.shape_limit(m, "many:16", row) == pytest.approx(12 / 20 + 4 / 30)
    # a record from before logits were booked: all rows at the blind best
    assert b.shape_limit(m, "many:16", {"tokens": 16, "seconds": 1.0, "calls": 1}) == pytest.approx(16 / 30)
    cost = {"phases": {"generate:p": {"seconds": 2.0, "decoded_tokens": 16, "completion_tokens": 12}},
            "decode_shapes": {"generate:p": {"many:16": row}}}
    text = "\n".join(b.shape_table({"c": cost}, [short, long], [chunks]))
    # limit 0.733 s of 2.0 s (37%) and of 1.0 s of decoding (73%); blind 16 / 30 = 0.533 s (27%)
    assert "| c | generate:p | 16 | many:16 16 | 12 | 700 | 2.0 | 0.7 | 37% | 73% | 27% |" in text

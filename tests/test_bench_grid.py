"""bench/grid.py (issue 6): every cell compiles, cells run and resume per cell, `grid.py report` writes their table
(its formats: test_bench_grid_report.py).

Cells are fitted with the scripted backend (grid.run_cells(..., sets=SCRIPTED), i.e. `--set
model.default.backend=scripted`) as trials of `dlc sweep`'s engine, exactly as the real grid runs them (here in
this process: `use_ray=False`; Ray itself is tested in test_sweep.py)."""
from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import pytest

from dlc.app import training
from dlc.lang import compiler

from conftest import bench_module

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SCRIPTED = ("model.default.backend=scripted",)


@pytest.fixture(scope="module")
def grid():
    yield bench_module("grid")
    sys.modules.pop("bench_grid", None)


def test_every_cell_of_the_grid_compiles(grid):
    cells = grid.grid()
    assert len({c.id for c in cells}) == len(cells) == 9 + 3 * (9 + 9 + 5 + 2 + 2)
    for c in cells:
        g = compiler.compile_source(grid.net_text(c), f"{c.id}.dln", {})
        assert g.fit.seed == c.seed and g.data.task == c.task
        assert g.data.test_size == grid.SIZES["test"]
        # the committed cells ran before issue 14's defaults: the paper's choices are pinned, not inherited
        assert g.layers["y"].calibration == "none"
        assert (g.fit.validation, g.fit.accept, g.fit.max_prompt_words, g.fit.copy_ngram) == ("accuracy", "best", 0, 0)
    five = compiler.compile_source(grid.net_text(grid.Cell("5shot", "navigate", 13)), "x.dln", {})
    assert five.fit.n_shots == 5 and five.fit.iters == 0


def test_cells_run_resume_and_report(grid, tmp_path, monkeypatch):
    out, cells = tmp_path / "out", tmp_path / "cells"
    chosen = grid.select(grid.grid(), "0shot,dln1", "subj", "42")
    assert [c.id for c in chosen] == ["0shot-subj-s42", "dln1-subj-s42"]
    heads = itertools.count()                           # HEAD moves while the cells run (commits land)
    monkeypatch.setattr(grid, "_commit", lambda: f"{next(heads):07d}")
    recs = grid.run_cells(chosen, data_dir=str(DATA), out=out, cells_dir=cells, sets=SCRIPTED, use_ray=False)
    assert [r["dlc_commit"] for r in recs if r] == ["0000000", "0000000"]   # the code the process loaded
    for r in recs:
        assert r is not None and 0.0 <= r["test_accuracy"] <= 1.0
        assert r["cost"]["calls"] > 0 and r["cost"]["requested_tokens"] > 0
        assert json.loads((cells / f"{r['cell']}.json").read_text()) == r
        assert r["machine"]["cpu"] and r["machine"]["load_avg_1m_end"] >= 0    # wall times name their machine
    dln1 = recs[1]
    assert dln1["iterations"] == 2 and set(dln1["prompts"]) == {"y"}

    # a finished cell is never fitted again: a rerun only reads JSON
    def no_fit(*a, **k):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(training, "fit", no_fit)
    assert grid.run_cell(chosen[1], data_dir=str(DATA), out=out, cells_dir=cells, sets=SCRIPTED,
                         use_ray=False) == dln1

    text = grid.report(cells_dir=cells, results=tmp_path / "RESULTS.md", plots_dir=tmp_path / "plots",
                       notes=tmp_path / "none.md")
    row = next(line for line in text.splitlines() if line.startswith("| DLN-1 (Qwen"))
    subj_col = ["Hyper.", "Nav.", "Date.", "Logic.7", "Mpqa", "Trec", "Subj"].index("Subj") + 1
    assert row.split("|")[subj_col + 1].strip() == f"{100 * dln1['test_accuracy']:.1f} (1)"
    assert "| dln1-subj-s42 |" in text
    assert "5shot-subj-s42" in text.split("## Pending cells")[1]     # not run: listed, not invented
    assert (tmp_path / "plots" / "accuracy.png").stat().st_size > 1000


def test_a_killed_cell_resumes_from_its_checkpoint(grid, tmp_path, monkeypatch):
    """A cell whose run directory holds a checkpoint but no result (killed mid-fit) continues from the checkpoint;
    one whose run finished but left no cell record is only read again."""
    out, cells = tmp_path / "out", tmp_path / "cells"
    cell = grid.Cell("dln1", "trec", 42)
    rec = grid.run_cell(cell, data_dir=str(DATA), out=out, cells_dir=cells, sets=SCRIPTED, use_ray=False)
    (runs,) = [p for p in (out / "runs").iterdir() if p.is_dir()]
    assert (runs / "checkpoint.json").is_file()
    (cells / f"{cell.id}.json").unlink()          # as if killed after the fit finished but before the record
    seen = []
    real = training.fit

    def spy(*a, **k):
        seen.append((k.get("resume"), dict(os.environ)))
        return real(*a, **k)

    monkeypatch.setattr(training, "fit", spy)
    again = grid.run_cell(cell, data_dir=str(DATA), out=out, cells_dir=cells, sets=SCRIPTED, use_ray=False)
    assert seen == [] and again["attempts"] == 1 and again["prompts"] == rec["prompts"]   # read, not refitted

    (cells / f"{cell.id}.json").unlink()
    (runs / "result.json").unlink()               # killed before the end: only the checkpoint is left
    again = grid.run_cell(cell, data_dir=str(DATA), out=out, cells_dir=cells, threads=1, sets=SCRIPTED,
                          use_ray=False)
    assert seen[0][0] == str(runs)                # resumed in place, not started again
    # the thread count is explicit (not dlc's load-average guess) and recorded with the cell
    assert seen[0][1]["DLC_THREADS"] == "1" and again["threads"] == 1
    # both attempts' wall times are the cell's cost
    assert again["attempts"] == 2 and again["cost"]["wall_seconds"] >= rec["cost"]["wall_seconds"]
    assert again["prompts"] == rec["prompts"] and again["test_accuracy"] == rec["test_accuracy"]


def test_a_smoke_run_on_another_model_must_stay_out_of_the_real_grid(grid, tmp_path, capsys):
    assert grid.main(["run", "--model", "tiny", "--cells", str(tmp_path / "c")]) == 1
    assert grid.main(["run", "--model", "tiny", "--out", str(tmp_path / "o")]) == 1
    assert "pass both --out and --cells" in capsys.readouterr().err
    assert grid.main(["run", "--set", "model.default.backend=scripted", "--cells", str(tmp_path / "c")]) == 1
    assert "--set changes the cells" in capsys.readouterr().err


def test_a_cell_record_keeps_its_phases_and_decode_shapes_when_the_backend_booked_them(grid):
    """bench/batching.py holds each phase of a grid cell to llama.cpp's best for the shapes it decoded: the record
    (in git) must carry them; a backend that books no shapes (scripted, remote) adds nothing."""
    shapes = {"score:score": {"one:32": {"tokens": 20, "seconds": 0.5, "calls": 1}}}
    phases = {"score:score": {"seconds": 0.6, "decoded_tokens": 20, "completion_tokens": 0}}
    be = {"seconds": 1.0, "decode_seconds": 0.5, "decoded_tokens": 20, "phases": phases, "decode_shapes": shapes}
    res = {"usage": {"calls": 1, "prompt_tokens": 5, "completion_tokens": 1, "wall_seconds": 2.0, "backend": be}}
    cost = grid.cell_record(grid.Cell("dln1", "subj", 42), res, 3.0)["cost"]
    assert cost["decode_shapes"] == shapes and cost["phases"] == phases
    be.pop("decode_shapes")
    assert "decode_shapes" not in grid.cell_record(grid.Cell("dln1", "subj", 42), res, 3.0)["cost"]

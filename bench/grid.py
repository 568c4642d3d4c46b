"""The benchmark grid (issue 6): DLN-1 vs 0-shot vs 5-shot, DLN-2, deep3/branched and a DSPy peer, with their cost.

    python bench/grid.py run [--methods dln1,0shot] [--tasks trec,subj] [--seeds 42] [--workers 1] [--no-ray]
    python bench/grid.py report          # bench/RESULTS.md + bench/plots/*.png from bench/cells/*.json (grid_report.py)
    python bench/grid.py list            # every cell of the grid and whether it is done

Why this shape:
- A *cell* is one (method, task, seed). Each is an ordinary `dlc fit` of a generated `.dln` (bench/out/nets/), run as
  one trial of `dlc sweep`'s engine (dlc.app.sweep: on Ray when it is installed, one cell at a time by default so
  each has every core; `--workers N` for more), with its own counters and wall time, the run directory under
  bench/out/runs/ and one LLM cache shared by all cells (bench/out/cache): the 0-shot test evaluation a DLN-1 cell
  repeats is a cache hit.
- Resume per cell: a finished cell leaves bench/cells/<cell>.json (small, committed) and is skipped; a cell killed
  mid-run is found again by its network and settings and continued from its checkpoint (as `dlc sweep` resumes a
  trial), so a rerun of a finished grid only reads JSON.
- 0-shot is greedy and its splits do not depend on the seed, so it is one cell per task (seed 42) reported for all
  seeds; 5-shot draws its demonstrations from the seed.
- Cost: `usage` is what dlc requested from the backend after the cache (calls, prompt/completion tokens, cache hits);
  `backend` is what llama.cpp really decoded and the minimum for the same requests (distinct token prefixes,
  `DLC_TRACK_PREFIXES=1`), the seconds spent inside the backend's calls and, of them, inside llama.cpp's decode;
  overhead = 1 - those seconds / training wall (two columns: outside the backend, outside the model's compute).
- Settings were fixed before any test number was seen, from the quickstart's dev-set runs (graphs/quickstart.dln),
  and shrunk to fit a 2-core CPU; RESULTS.md states all of them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CELLS = BENCH / "cells"
OUT = BENCH / "out"
SEEDS = (13, 42, 25)
RUN_SEEDS = (42, 13, 25)      # the order seeds are run in
ZERO_SHOT_SEED = 42

NINE = ("hyperbaton", "navigate", "date_understanding", "logical_deduction_seven_objects", "mpqa", "trec", "subj",
        "disaster", "airline")
# NLU tasks first: the local model is above the majority baseline only there (local-models.md)
RUN_ORDER = ("trec", "subj", "mpqa", "disaster", "airline", "navigate", "hyperbaton", "date_understanding",
             "logical_deduction_seven_objects")
DLN2_TASKS = ("navigate", "date_understanding", "logical_deduction_seven_objects", "subj", "disaster")
DEEP_TASKS = ("navigate", "subj")
SHORT = {"hyperbaton": "Hyper.", "navigate": "Nav.", "date_understanding": "Date.",
         "logical_deduction_seven_objects": "Logic.7", "mpqa": "Mpqa", "trec": "Trec", "subj": "Subj",
         "disaster": "Disaster", "airline": "Airline"}

SIZES = {"train": 40, "dev": 20, "test": 40}
HIDDEN_MAX_TOKENS = 64
POSTERIOR_MAX_TOKENS = 512     # backward.max_tokens, the cap of posterior samples when the grid began
FIT = {
    "0shot": "iters = 0",
    "5shot": "iters = 0  n_shots = 5",
    "dln1": "iters = 2  batch_size = 8  num_p_samples = 6  val_freq = 1  tolerance = 2  use_memory = 2",
    "dln2": ("iters = 2  batch_size = 8  num_p_samples = 4  num_h_samples = 3  val_freq = 1  tolerance = 2  "
             "use_memory = 2"),
}
FIT["deep3"] = FIT["branched"] = FIT["dln2"]
# The grid's cells ran before issue 14 changed dlc's defaults (a calibrated output layer, dev log-likelihood with a
# paired acceptance rule, rejection of long or copied proposals): every generated network pins the paper's choices,
# so a cell run today is the same method as the committed ones (bench/learning.py measures the new defaults).
PAPER_FIT = "validation = accuracy  accept = best  max_prompt_words = 0  copy_ngram = 0"
NET_NAME = {"0shot": "zero_shot", "5shot": "five_shot"}
METHODS = ("0shot", "5shot", "dln1", "dln2", "deep3", "branched")
LABEL = {"0shot": "0-shot", "5shot": "5-shot", "dln1": "DLN-1", "dln2": "DLN-2", "deep3": "deep3",
         "branched": "branched", "dspy-copro": "DSPy COPRO"}

# The paper's GPT-3 (text-davinci-003) test accuracies, dln-reference §5 Tables 1-2: a different, far larger model.
PAPER_GPT3 = {
    "0shot": dict(zip(NINE, ("60.8", "64.1", "56.4", "45.9", "88.0", "61.9", "61.7", "81.6", "75.6"))),
    "5shot": dict(zip(NINE, ("55.6", "56.5", "62.1", "36.7", "87.2", "80.0", "76.4", "81.2", "82.7"))),
    "dln1": dict(zip(NINE, ("91.9±3.0", "68.5±4.7", "55.7±4.5", "47.5±2.1", "88.5±2.5", "89.7±3.2", "83.2±6.5",
                            "81.7±6.5", "83.2±5.5"))),
    "dln2": {"navigate": "83.1±24.7", "date_understanding": "75.2±14.8", "logical_deduction_seven_objects": "45.7±3.5",
             "disaster": "82.8±2.5", "subj": "85.9±8.7"},
}


@dataclass(frozen=True)
class Cell:
    method: str
    task: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.method}-{self.task}-s{self.seed}"

    @property
    def tier(self) -> int:
        return METHODS.index(self.method)


def grid(seeds: Sequence[int] = RUN_SEEDS) -> list[Cell]:
    """Every dlc cell of the issue's grid, in the order they are run: seed by seed (42 first), then task by task."""
    cells: list[Cell] = []
    for seed in seeds:
        for task in RUN_ORDER:               # task by task, so a partial grid has whole rows to compare
            for method in ("0shot", "dln1", "5shot"):
                if method != "0shot" or seed == ZERO_SHOT_SEED:
                    cells.append(Cell(method, task, seed))
        for method, tasks in (("dln2", DLN2_TASKS), ("deep3", DEEP_TASKS), ("branched", DEEP_TASKS)):
            cells.extend(Cell(method, t, seed) for t in tasks)
    return cells


# ------------------------------------------------------------------------------------------------ networks

def _q(text: str) -> str:
    return json.dumps(text)


def _output_layer(task: str, parents: str, template: str, calibration: str | None = "none") -> str:
    """The output layer for a task: its initial instruction, its labels, and for the BBH tasks a reply prefix so the
    label is the next word (local-models.md §2: without it chat models open with a sentence). `calibration`: the
    layer's setting (None: dlc's default)."""
    from dlc.data.tasks import TASKS

    info = TASKS[task]
    lines = [f"layer y({parents}) {{", f"  template = {template}",
             *([f"  calibration = {calibration}"] if calibration else []), f"  prompt = {_q(info.instruction)}"]
    names = info.label_names
    if info.source == "bbh" and all(len(n) == 1 and n.isupper() for n in names):
        lines.append('  answer_prefix = "The answer is ("')
        lines.append("  output = choice { " + ", ".join(f'{n}: "{n}"' for n in names) + " }")
    elif info.source == "bbh":
        lines.append('  answer_prefix = "The answer is"')
        lines.append("  output = choice { " + ", ".join(f'{n}: " {n}" | " {n.capitalize()}"' for n in names) + " }")
    else:
        lines.append("  output = choice")
    lines.append("}")
    return "\n".join(lines)


def net_text(cell: Cell) -> str:
    """The `.dln` of a cell: the method's graph on the cell's task with the grid's sizes and fit settings."""
    m, task = cell.method, cell.task
    head = [f"# generated by bench/grid.py for cell {cell.id}", f"network {NET_NAME.get(m, m)}", "input x", ""]
    # the committed hidden-layer cells drew posterior samples up to backward.max_tokens (512): pinned, so that every
    # seed of a method runs the same algorithm (since then a sample defaults to the layer's max_tokens)
    hidden = f"  max_tokens = {HIDDEN_MAX_TOKENS}"
    pin = f"posterior_max_tokens = {POSTERIOR_MAX_TOKENS}"
    if m in ("0shot", "5shot", "dln1"):
        body = [_output_layer(task, "x", "classify")]
    elif m == "dln2":
        body = ["layer h(x) {", "  template = step_by_step", '  prompt = ""', hidden,
                f"  backward {{ posterior = {{ prior_answer: 0.5, prior: 0.5 }}  {pin} }}", "}", "",
                _output_layer(task, "x, h", "residual")]
    elif m == "deep3":
        body = ["layer analysis(x) {", "  template = brief_analysis",
                '  prompt = "Identify the facts stated in the text."', hidden, f"  backward {{ {pin} }}", "}", "",
                "layer reasoning(analysis) {", "  template = step_by_step",
                '  prompt = "Use the facts to decide the answer."', hidden,
                f"  backward {{ posterior = {{ prior_answer: 0.5, edit: 0.5 }}  {pin} }}", "}", "",
                _output_layer(task, "x, reasoning", "residual")]
    elif m == "branched":
        body = ["layer steps(x) {", "  template = step_by_step", '  prompt = ""', hidden, f"  backward {{ {pin} }}",
                "}", "", "layer brief(x) {", "  template = brief_analysis",
                '  prompt = "Point out the facts or words that decide the answer."', hidden, f"  backward {{ {pin} }}",
                "}", "",
                _output_layer(task, "x, steps, brief", "residual")]
    else:
        raise ValueError(f"unknown method {m}")
    tail = ["", "output y { target = label  metric = accuracy }", "",
            f'data {{ task = "{task}"  train_size = {SIZES["train"]}  dev_size = {SIZES["dev"]}  '
            f'test_size = {SIZES["test"]} }}',
            f"fit  {{ {FIT[m]}  {PAPER_FIT}  seed = {cell.seed} }}", ""]
    return "\n".join(head + body + tail)


# ------------------------------------------------------------------------------------------------ running

def _atomic_json(path: Path, data: Any) -> None:
    from dlc.fsutil import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def load_cell(cell_id: str, cells_dir: Path = CELLS) -> dict[str, Any] | None:
    p = cells_dir / f"{cell_id}.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return data if data.get("test_accuracy") is not None else None


def _outside(inside: float | None, wall: float) -> float | None:
    """The fraction of `wall` not spent `inside` (the backend's calls, or llama.cpp's decode)."""
    return round(1.0 - float(inside) / wall, 4) if inside is not None and wall > 0 else None


def cell_record(cell: Cell, result: dict[str, Any], wall: float) -> dict[str, Any]:
    """The committed summary of a finished cell (bench/cells/<id>.json) from its run's result.json."""
    u = result.get("usage") or {}
    be = u.get("backend") or {}
    train_wall = float(u.get("wall_seconds") or 0.0)
    requested = int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))
    cost = {"calls": u.get("calls"), "prompt_tokens": u.get("prompt_tokens"),
            "completion_tokens": u.get("completion_tokens"), "cache_hits": u.get("cache_hits"),
            "requested_tokens": requested, "decoded_tokens": be.get("decoded_tokens"),
            "unique_tokens": be.get("unique_tokens"), "backend_seconds": be.get("seconds"),
            "fit_seconds": round(train_wall, 1), "wall_seconds": round(wall, 1),
            "overhead": _outside(be.get("seconds"), train_wall), "decode_seconds": be.get("decode_seconds"),
            "overhead_decode": _outside(be.get("decode_seconds"), train_wall)}
    if be.get("decode_shapes"):    # per phase, and per llama_decode shape: bench/batching.py's limit by shape
        cost["phases"], cost["decode_shapes"] = be.get("phases"), be["decode_shapes"]
    return {"cell": cell.id, "method": cell.method, "task": cell.task, "seed": cell.seed, "sizes": dict(SIZES),
            "settings": FIT[cell.method], "dev_accuracy": result.get("dev_accuracy"),
            "test_accuracy": result.get("test_accuracy"), "baseline": result.get("baseline", {}),
            "prompts": result.get("prompts"), "iterations": result.get("iterations"), "cost": cost,
            "test_confusion": (result.get("test") or {}).get("confusion"),
            "test_predictions": (result.get("predictions") or {}).get("test"),   # paired comparisons, per example
            "finished_at": result.get("finished_at"), "dlc_commit": _commit()}


def _commit() -> str | None:
    """The dlc commit a cell ran on (cost columns change with the code: keep them comparable)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "dlc"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() + ("+dirty" if dirty else "")) if out.returncode == 0 else None


def _trial_spec(cell: Cell, index: int, *, data_dir: str, out: Path, model: str | None, threads: int,
                sets: Sequence[str]) -> Any:
    """The cell as one trial of `dlc sweep` (dlc.app.sweep): its generated network, the overrides of a fresh start
    (a resume reads them from the run), and the environment its fit runs with."""
    from dataclasses import replace

    from dlc.app.sweep import TrialSpec, plan_trials

    nets, runs = out / "nets", out / "runs"
    nets.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    net = nets / f"{cell.id}.dln"
    net.write_text(net_text(cell), encoding="utf-8")
    overrides = dict(kv.split("=", 1) for kv in sets)
    if model:
        overrides["model.default.model"] = model
    trial = replace(plan_trials(str(net), overrides, [])[0], index=index)
    # an explicit thread count: dlc's default reads the load average, which the previous cell leaves at ~2 for a
    # minute, so back-to-back cells would silently run on 1 thread and their wall times would not compare
    env = {k: v for k, v in os.environ.items() if k.startswith("DLC_")}
    env.update(DLC_TRACK_PREFIXES="1", DLC_THREADS=str(threads))
    return TrialSpec(trial, str(net.resolve()), str(runs.resolve()), str(Path(data_dir).resolve()),
                     str((out / "cache").resolve()), env=env)


def _cpu() -> str:
    """bench/batching.py's CPU description (model and widest vector extension), imported when a cell ends."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from batching import _cpu as cpu

    return cpu()


def run_cells(cells: Sequence[Cell], *, data_dir: str, out: Path = OUT, cells_dir: Path = CELLS,
              model: str | None = None, log: Any = sys.stdout, threads: int | None = None, sets: Sequence[str] = (),
              use_ray: bool | None = None, workers: int = 1) -> list[dict[str, Any] | None]:
    """Fit the cells not finished yet as the trials of one `dlc sweep` (on Ray when it is installed, else one after
    another in this process) and record each as it ends. A cell's run is found again by its network and settings
    (sweep.find_run): a finished run is only read, an interrupted one continues from its checkpoint. `workers`: cells
    at once (default 1: one embedded model with every core per cell, which the recorded wall times assume). `sets`
    are extra `--set BLOCK.KEY=VALUE` of a fresh start, e.g. the tests' `model.default.backend=scripted`."""
    from dlc.app import sweep_ray
    from dlc.app.sweep import SweepInterrupted, run_inline

    threads = threads or os.cpu_count() or 1
    # the code this process loaded (and fits with, inline or in workers it starts now): a commit made while a
    # cell runs (hours) must not be recorded as the one it ran on
    code = _commit()
    recs: dict[str, dict[str, Any] | None] = {c.id: load_cell(c.id, cells_dir) for c in cells}
    todo = [c for c in cells if recs[c.id] is None]
    specs = [_trial_spec(c, i, data_dir=data_dir, out=out, model=model, threads=threads, sets=sets)
             for i, c in enumerate(todo)]

    def done(r: dict[str, Any]) -> None:
        cell = todo[r["index"]]
        # a killed and resumed cell costs every attempt: the wall times add up (like result.json's usage does)
        walls = out / "runs" / f"{cell.id}.walls"
        if not r.get("reused"):
            with open(walls, "a", encoding="utf-8") as fh:
                fh.write(f"{r['seconds']:.1f}\n")
        if r["status"] != "finished" or not r.get("run_dir"):
            print(f"  {cell.id} {r['status']}: {r.get('error')}", file=log, flush=True)
            return
        attempts = [float(x) for x in walls.read_text(encoding="utf-8").split()] if walls.is_file() else []
        wall = sum(attempts)
        result = json.loads((Path(r["run_dir"]) / "result.json").read_text(encoding="utf-8"))
        rec = cell_record(cell, result, wall)
        rec["dlc_commit"] = code         # of the process that finished it (a resumed cell may have begun on another)
        rec["threads"] = threads
        rec["attempts"] = len(attempts)
        # wall times only compare on one machine: batched decoding runs at half the rate on the AVX2 machine as on
        # the earlier one (bench/README.md), and a load above `threads` at the end means something ran beside it
        rec["machine"] = {"cpu": _cpu(), "load_avg_1m_end": round(os.getloadavg()[0], 2)}
        _atomic_json(cells_dir / f"{cell.id}.json", rec)
        recs[cell.id] = rec
        print(f"[{time.strftime('%H:%M:%S')}] {cell.id}: dev {rec['dev_accuracy']:.3f} test "
              f"{rec['test_accuracy']:.3f} ({rec['baseline'].get('test_accuracy')} before), {wall:.0f} s, "
              f"{Path(r['run_dir']).name}", file=log, flush=True)

    if specs:
        print(f"[{time.strftime('%H:%M:%S')}] {len(specs)} cell(s) to fit: {', '.join(c.id for c in todo)}",
              file=log, flush=True)
        if use_ray is None:
            use_ray = sweep_ray.available()
        # the Ray workers this starts inherit PYTHONPATH: they run this checkout's dlc, like this process (main())
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved) if p)
        try:
            if use_ray:
                sweep_ray.run(specs, done, address=os.environ.get("RAY_ADDRESS") or None, workers=workers,
                              cpus_per_trial=None, fail_fast=False, out=log)
            else:
                run_inline(specs, done, False)
        except SweepInterrupted:
            print("interrupted: run again to continue (finished cells are kept, the others resume)", file=log)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    return [recs[c.id] for c in cells]


def run_cell(cell: Cell, **kw: Any) -> dict[str, Any] | None:
    """One cell (see run_cells)."""
    return run_cells([cell], **kw)[0]


def select(cells: Iterable[Cell], methods: str | None, tasks: str | None, seeds: str | None) -> list[Cell]:
    def parse(s: str | None) -> set[str] | None:
        return {x.strip() for x in s.split(",") if x.strip()} if s else None

    m, t, s = parse(methods), parse(tasks), parse(seeds)
    return [c for c in cells if (m is None or c.method in m) and (t is None or c.task in t)
            and (s is None or str(c.seed) in s)]


# ------------------------------------------------------------------------------------------------ CLI

def _default_data_dir() -> str:
    return os.environ.get("DLC_DATA_DIR") or str(REPO.parent / "shared" / "data")


def report(**kw: Any) -> str:
    """RESULTS.md and the plots from the finished cells (bench/grid_report.py)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from grid_report import report as write_report

    return write_report(**kw)


def main(argv: Sequence[str] | None = None) -> int:
    # the cells run this checkout's dlc (a worktree's, not whichever one the virtualenv installed), so `dlc_commit`
    # names the code that really ran
    if sys.path[0] != str(REPO):
        sys.path.insert(0, str(REPO))
    ap = argparse.ArgumentParser(prog="bench/grid.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the cells not finished yet, then rewrite RESULTS.md")
    for p in (r, sub.add_parser("list", help="the grid's cells and their status")):
        p.add_argument("--methods")
        p.add_argument("--tasks")
        p.add_argument("--seeds")
    r.add_argument("--data-dir", default=_default_data_dir())
    r.add_argument("--model", help="override the embedded model (e.g. tiny, for a smoke run; not for RESULTS.md)")
    r.add_argument("--workers", type=int, default=1, help="cells at once on Ray (default 1: every core per cell)")
    r.add_argument("--no-ray", action="store_true", help="fit the cells one after another in this process")
    r.add_argument("--out", default=str(OUT), help="generated nets, run directories, LLM cache")
    r.add_argument("--cells", default=str(CELLS), help="where finished cells are recorded")
    r.add_argument("--threads", type=int, default=None, help="llama.cpp threads per cell (default: every core)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                   help="an extra --set for every fresh cell (e.g. model.default.backend=scripted for a smoke run; "
                        "not for RESULTS.md)")
    sub.add_parser("report", help="rewrite bench/RESULTS.md and bench/plots/ from bench/cells/")
    a = ap.parse_args(argv)
    if a.cmd == "report":
        report()
        print(f"wrote {BENCH / 'RESULTS.md'}")
        return 0
    cells = select(grid(), a.methods, a.tasks, a.seeds)
    if a.cmd == "list":
        for c in cells:
            print(f"{c.id:55s} {'done' if load_cell(c.id) else 'pending'}")
        return 0
    if not Path(a.data_dir).is_dir():
        print(f"error: data directory {a.data_dir} does not exist; pass --data-dir (../shared/data)", file=sys.stderr)
        return 1
    if (a.model or a.sets) and (Path(a.cells).resolve() == CELLS or Path(a.out).resolve() == OUT):
        # both: a run directory left in bench/out/runs would be resumed by the real grid, with its model
        print(f"error: {'--model' if a.model else '--set'} changes the cells, so their runs and records must stay out "
              "of bench/out and bench/cells; pass both --out and --cells", file=sys.stderr)
        return 1
    recs = run_cells(cells, data_dir=a.data_dir, out=Path(a.out), cells_dir=Path(a.cells), model=a.model,
                     threads=a.threads, sets=a.sets, use_ray=False if a.no_ray else None, workers=a.workers)
    failed = sum(r is None for r in recs)
    if Path(a.cells) == CELLS:
        report()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

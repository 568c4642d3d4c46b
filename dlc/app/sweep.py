"""`dlc sweep` as a function: every combination of `--grid` values is an ordinary fit with its own run directory
under the runs root, run on Ray (dlc.app.sweep_ray) or, without Ray, one after another in this process; then a
summary with mean ± 95% t-interval over the seeds of each combination (dlc.report.stats.mean_ci, as `dlc eval`).

A trial is identified by what it trains, not by a name: the network and resolved settings hashes (as a resume checks
them), the `--set`/`--grid` values it was given (the hashes leave out where the data lives, e.g. data.data_dir) and
the --data-dir. A sweep run again finds its trials' run directories under the runs root: a finished one
is reported as it is, an interrupted one (Ctrl-C, a killed worker) continues from its checkpoint, a missing one
starts. So re-running the same command after a failure or an interruption only does what is left (dbt's
`retry` / Ray Tune's restore, without a state file to lose), and adding a seed to the grid runs only that seed.
"""
from __future__ import annotations

import io
import itertools
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

from dlc.errors import DlcError, DlcUsageError, redact, render_error

SEED = "fit.seed"
FINISHED, FAILED, INTERRUPTED, SKIPPED = "finished", "failed", "interrupted", "skipped"


# ------------------------------------------------------------------------------------------------ the grid

def split_values(text: str) -> list[str]:
    """`13,42,25` -> ['13', '42', '25']; commas inside [...], {...} or quotes belong to one value (`[a, b]`)."""
    out, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch in "[{(":
            depth += 1
            cur.append(ch)
        elif ch in "]})":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_grid(items: Sequence[str], sets: Mapping[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """`["fit.seed=13,42", "data.task=trec,subj"]` -> [("fit.seed", ["13", "42"]), ("data.task", [...])];
    E108 for a malformed item, an empty or repeated value, a key given twice or also given with --set."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        hint = "e.g. --grid fit.seed=13,42,25 --grid data.task=trec,subj"
        if not sep or "." not in key or key.startswith(".") or key.endswith("."):
            raise DlcUsageError(f"--grid '{item}' is not BLOCK.KEY=VALUE1,VALUE2,...", code="E108", hint=hint)
        values = split_values(raw)
        if any(v == "" for v in values):
            raise DlcUsageError(f"--grid '{item}' has an empty value", code="E108", hint=hint)
        if len(set(values)) != len(values):
            raise DlcUsageError(f"--grid '{item}' repeats a value", code="E108")
        if any(k == key for k, _ in grid):
            raise DlcUsageError(f"--grid gives {key} twice", code="E108", hint="list all its values in one --grid")
        if sets and key in sets:
            raise DlcUsageError(f"{key} is given both with --grid and with --set", code="E108",
                                hint="keep it in one of them")
        grid.append((key, values))
    if not grid:
        raise DlcUsageError("dlc sweep needs at least one --grid", code="E108", hint=hint if items else
                            "e.g. --grid fit.seed=13,42,25")
    return grid


@dataclass(frozen=True)
class Trial:
    """One combination: its grid values, the overrides it fits with, and the identity of what it trains."""

    index: int
    values: tuple[tuple[str, str], ...]
    overrides: Mapping[str, str]
    net: str
    graph_sha256: str
    config_sha256: str
    embedded: bool                        # one of its models runs in-process (llama.cpp): it needs CPUs
    env_names: tuple[str, ...] = ()       # variables its models read (base_url_env, api_key_env)
    graph_aliases: tuple[str, ...] = ()   # the hashes older dlc recorded for the same network (graph_identities)

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values)


def plan_trials(target: str, sets: Mapping[str, str], grid: Sequence[tuple[str, Sequence[str]]],
                err: TextIO | None = None) -> list[Trial]:
    """Compile every combination now, so a value that does not compile stops the sweep before anything runs
    (the error follows a line naming the combination)."""
    from dlc.app.targets import load_network
    from dlc.artifacts.identity import config_identity, graph_identities

    trials = []
    for i, combo in enumerate(itertools.product(*(vals for _, vals in grid))):
        values = tuple((k, v) for (k, _), v in zip(grid, combo))
        overrides = {**sets, **dict(values)}
        try:
            net = load_network(target, overrides)
        except DlcError:
            _say(err, f"in the trial {' '.join(f'{k}={v}' for k, v in values)}:")
            raise
        g = net.graph
        names = sorted({n for m in g.models.values() for n in (m.base_url_env, m.api_key_env) if n})
        hashes = graph_identities(g)
        trials.append(Trial(i, values, overrides, net.name, hashes[0], config_identity(g),
                            any(m.backend == "embedded" for m in g.models.values()), tuple(names), hashes[1:]))
    return trials


# ------------------------------------------------------------------------------------------------ one trial

@dataclass
class TrialSpec:
    """Everything a worker needs to run one trial (plain data: it travels to a Ray worker)."""

    trial: Trial
    target: str                           # absolute path of the .dln / artifact
    runs_root: str                        # absolute
    data_dir: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    fresh: bool = False                   # never reuse or resume an existing run directory
    env: Mapping[str, str] = field(default_factory=dict)        # the sweep's DLC_* (and MLFLOW_*) environment
    mlflow: Mapping[str, Any] | None = None                     # {"experiment": ..., "parent_run_id": ...}


def find_run(runs_root: str | os.PathLike[str], trial: Trial, data_dir: str | None) -> tuple[str, Path] | None:
    """The trial's run directory under the root, if there is one: ("finished", path) (the newest finished one
    wins) or ("interrupted", path) (the newest unfinished one). A run is the trial's when it has the same network
    and settings hashes, was given the same overrides (so `dlc fit NET --set ...` with the trial's values counts)
    and the same --data-dir. Damaged directories are not candidates."""
    from dlc.artifacts.rundir import iter_runs

    finished: Path | None = None
    unfinished: Path | None = None
    for run in iter_runs(runs_root):
        try:
            cfg = run.config()
        except DlcError:
            continue
        if cfg.graph_sha256 not in (trial.graph_sha256, *trial.graph_aliases) or \
                (cfg.config_sha256, cfg.data_dir) != (trial.config_sha256, data_dir):
            continue
        if dict(cfg.overrides or {}) != dict(trial.overrides):
            continue
        if run.is_finished():
            finished = run.path
        else:
            unfinished = run.path
    if finished is not None:
        return FINISHED, finished
    return (INTERRUPTED, unfinished) if unfinished is not None else None


def run_trial(spec: TrialSpec) -> dict[str, Any]:
    """Run (or resume, or just report) one trial as `dlc fit` would; never raises: the outcome says what happened.
    Runs in a Ray worker process or in the sweep's own process."""
    from dlc.app.training import fit
    from dlc.artifacts.rundir import RunDir

    t0 = time.perf_counter()
    trial = spec.trial
    out: dict[str, Any] = {"index": trial.index, "values": dict(trial.values), "status": FAILED, "run_dir": None,
                           "reused": False, "resumed": False, "error": None}
    # the trial sees the sweep's dlc settings, not the worker's: DLC_* variables the sweep does not have are unset
    # for the trial (a Ray worker inherits the environment Ray was started with, or a node's own)
    gone = [k for k in os.environ if k.startswith("DLC_") and k not in spec.env]
    saved = {k: os.environ.get(k) for k in [*spec.env, *gone]}
    for k in gone:
        del os.environ[k]
    os.environ.update(spec.env)
    tracker = None
    try:
        found = None if spec.fresh else find_run(spec.runs_root, trial, spec.data_dir)
        if found is not None and found[0] == FINISHED:
            out.update(status=FINISHED, reused=True, run_dir=str(found[1]))
            out.update(_scores(RunDir.open(found[1]).result()))
            return out
        resume = str(found[1]) if found is not None else None
        out["resumed"] = resume is not None
        if spec.mlflow is not None:
            from dlc.app.tracking import MlflowTracker

            tracker = MlflowTracker(tracking_uri=spec.mlflow.get("tracking_uri"),
                                    experiment=spec.mlflow.get("experiment"),
                                    parent_run_id=spec.mlflow.get("parent_run_id"), err=None).connect()
        argv = ["fit", spec.target, *[a for k, v in trial.overrides.items() for a in ("--set", f"{k}={v}")],
                "--runs-root", spec.runs_root]
        log = io.StringIO()
        outcome = fit(spec.target, overrides=trial.overrides, runs_root=spec.runs_root, resume=resume,
                      data_dir=spec.data_dir, cache_dir=spec.cache_dir, no_cache=spec.no_cache, out=log, err=log,
                      progress=False, argv=argv, observer=tracker)
        out["run_dir"] = str(outcome.run_dir) if outcome.run_dir else None
        if tracker is not None and outcome.run_dir is not None:
            tracker.finished(outcome.run_dir, outcome.result)
            out["mlflow_run_id"] = tracker.run_id
        out.update(status=FINISHED, **_scores(outcome.result))
    except KeyboardInterrupt:
        out.update(status=INTERRUPTED, error="interrupted (resumable: run the sweep again)")
        if tracker is not None:
            tracker.aborted(interrupted=True)
    except DlcError as e:
        out["error"] = render_error(e).splitlines()[0]
        if tracker is not None:
            tracker.aborted(interrupted=False)
    except Exception as e:          # noqa: BLE001 - a bug in one trial must not end the others
        out["error"] = redact(f"{type(e).__name__}: {e}".splitlines()[0])
        out["traceback"] = redact(traceback.format_exc())
        if tracker is not None:
            tracker.aborted(interrupted=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        out["seconds"] = round(time.perf_counter() - t0, 3)
        if out["run_dir"] is None and out["status"] != FINISHED and not spec.fresh:
            again = find_run(spec.runs_root, trial, spec.data_dir)     # created before it failed
            out["run_dir"] = str(again[1]) if again else None
    return out


def _scores(res: Any) -> dict[str, Any]:
    if res is None:
        return {}
    return {"dev": res.dev_accuracy, "test": res.test_accuracy, "baseline_dev": res.baseline.dev_accuracy,
            "baseline_test": res.baseline.test_accuracy, "iterations": res.iterations,
            "tokens": int((res.usage or {}).get("prompt_tokens", 0) or 0)
            + int((res.usage or {}).get("completion_tokens", 0) or 0)}


# ------------------------------------------------------------------------------------------------ the sweep

def lost(spec: TrialSpec, status: str, error: str) -> dict[str, Any]:
    """The outcome of a trial that returned none: skipped (--fail-fast), cancelled, or its worker died. Its run
    directory, if it got one, is found again (it is where a rerun resumes)."""
    found = None if status == SKIPPED or spec.fresh else find_run(spec.runs_root, spec.trial, spec.data_dir)
    return {"index": spec.trial.index, "values": dict(spec.trial.values), "status": status,
            "run_dir": str(found[1]) if found else None, "reused": False, "resumed": False, "error": error}


def run_inline(specs: list[TrialSpec], done: Callable[[dict[str, Any]], None],
               fail_fast: bool = False) -> list[dict[str, Any]]:
    """One trial after another in this process; Ctrl-C stops after the trial in flight has checkpointed, and
    `fail_fast` at the first trial that does not finish (the rest are reported skipped)."""
    results = []
    for i, spec in enumerate(specs):
        r = run_trial(spec)
        results.append(r)
        done(r)
        if r["status"] == INTERRUPTED:
            raise SweepInterrupted(results)
        if fail_fast and r["status"] != FINISHED:
            for rest in specs[i + 1:]:
                results.append(lost(rest, SKIPPED, "not started (--fail-fast)"))
                done(results[-1])
            break
    return results


class SweepInterrupted(Exception):
    """Ctrl-C during a sweep: the outcomes so far, for the summary."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        super().__init__("interrupted")
        self.results = results


@dataclass
class SweepOutcome:
    trials: list[Trial]
    results: list[dict[str, Any]]         # one per trial, in trial order (missing: never started)
    groups: list[dict[str, Any]]
    executor: str
    interrupted: bool = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] != FINISHED]

    def to_json(self) -> dict[str, Any]:
        return {"executor": self.executor, "interrupted": self.interrupted, "trials": self.results,
                "groups": self.groups}


def summarize(trials: Sequence[Trial], results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per combination of the grid keys other than fit.seed: finished seeds, dev/test accuracy (and test
    before training) as mean ± 95% t-interval over them."""
    from dlc.report.stats import mean_ci

    by_index = {r["index"]: r for r in results}
    groups: dict[tuple[tuple[str, str], ...], list[Trial]] = {}
    for t in trials:
        groups.setdefault(tuple((k, v) for k, v in t.values if k != SEED), []).append(t)
    rows = []
    for key, members in groups.items():
        done = [by_index[t.index] for t in members if by_index.get(t.index, {}).get("status") == FINISHED]
        row: dict[str, Any] = {"values": dict(key), "trials": len(members), "finished": len(done),
                               "seeds": [dict(t.values).get(SEED) for t in members
                                         if by_index.get(t.index, {}).get("status") == FINISHED]}
        for metric in ("dev", "test", "baseline_test"):
            vals = [r[metric] for r in done if r.get(metric) is not None]
            row[metric] = mean_ci(vals).to_json() if vals else None
        rows.append(row)
    return rows


def sweep(target: str, grid: Sequence[tuple[str, Sequence[str]]], *, trials: Sequence[Trial] | None = None,
          sets: Mapping[str, str] | None = None,
          runs_root: str = "runs", data_dir: str | None = None, cache_dir: str | None = None, no_cache: bool = False,
          fresh: bool = False, use_ray: bool | None = None, address: str | None = None, workers: int | None = None,
          cpus_per_trial: float | None = None, fail_fast: bool = False, mlflow: Mapping[str, Any] | None = None,
          out: TextIO | None = None, err: TextIO | None = None) -> SweepOutcome:
    """Plan every trial (compiling each: mistakes fail here; pass `trials` when already planned), run them,
    summarize. `use_ray`: None = Ray when it is installed (or an address is given), False = in this process,
    True = Ray or E144. `mlflow`: {experiment, parent_run_id, tracking_uri} when each trial logs to MLflow."""
    from dlc.app import sweep_ray

    sets = dict(sets or {})
    trials = list(trials) if trials is not None else plan_trials(target, sets, grid, err)
    root = str(Path(runs_root).resolve())
    # dlc's own settings, the variables the models name (an endpoint's URL and key), and MLflow's when trials log
    # there: a worker on another node has its own environment
    named = {n for t in trials for n in t.env_names}
    env = {k: v for k, v in os.environ.items()
           if k.startswith("DLC_") or k in named or (mlflow and k.startswith("MLFLOW_"))}
    if mlflow and mlflow.get("tracking_uri"):
        env["MLFLOW_TRACKING_URI"] = str(mlflow["tracking_uri"])
    specs = [TrialSpec(t, str(Path(target).resolve()), root, _abs(data_dir), _abs(cache_dir), no_cache, fresh,
                       dict(env), mlflow) for t in trials]
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray_ok = sweep_ray.available()
    if use_ray is None:
        use_ray = ray_ok or address is not None
    if use_ray and not ray_ok:
        raise DlcUsageError("running a sweep on Ray needs the ray package, which is not installed", code="E144",
                            hint="pip install 'dlc[ray]'   (or pass --no-ray to run the trials one after another "
                                 "in this process)")
    keys = " × ".join(k for k, _ in grid)
    _say(out, f"sweep {trials[0].net}: {len(trials)} trial(s) ({keys}), run directories under {runs_root}")
    if not use_ray:
        _say(out, "running the trials one after another in this process" + ("" if ray_ok else
             " (ray is not installed: pip install 'dlc[ray]' runs them in parallel, or on a cluster)"))
    count = itertools.count(1)

    def done(r: dict[str, Any]) -> None:
        _say(out, format_trial(r, next(count), len(trials), trials[r["index"]]))

    interrupted = False
    try:
        if use_ray:
            results = sweep_ray.run(specs, done, address=address, workers=workers, cpus_per_trial=cpus_per_trial,
                                    fail_fast=fail_fast, out=out)
        else:
            results = run_inline(specs, done, fail_fast)
    except SweepInterrupted as e:
        results, interrupted = e.results, True
    results = sorted(results, key=lambda r: r["index"])
    outcome = SweepOutcome(trials, results, summarize(trials, results), "ray" if use_ray else "inline", interrupted)
    return outcome


def _abs(p: str | None) -> str | None:
    return str(Path(p).resolve()) if p else None


def _say(out: TextIO | None, text: str) -> None:
    if out is not None:
        print(text, file=out, flush=True)


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def _rel(p: str | None) -> str:
    if not p:
        return "-"
    try:
        return os.path.relpath(p)
    except ValueError:
        return p


def format_trial(r: Mapping[str, Any], n: int, total: int, trial: Trial) -> str:
    """The line printed as a trial ends: what it was, how it ended, its accuracies and run directory."""
    how = ("finished (already)" if r.get("reused") else "finished (resumed)" if r.get("resumed") else
           "finished") if r["status"] == FINISHED else r["status"]
    line = f"[{n}/{total}] {how:<18} {trial.label()}"
    if r["status"] == FINISHED:
        line += f"  dev {_f(r.get('dev'))}  test {_f(r.get('test'))}  {_rel(r.get('run_dir'))}"
        if not r.get("reused"):
            line += f"  ({r.get('seconds', 0):.1f} s)"
    else:
        line += f"  {r.get('error') or ''}" + (f"  ({_rel(r['run_dir'])})" if r.get("run_dir") else "")
    return line


def format_summary(outcome: SweepOutcome) -> str:
    """The table: one row per combination (seeds pooled), accuracies as mean ± 95% t-interval."""
    rows = outcome.groups
    keys = list(rows[0]["values"]) if rows else []
    seeded = any(k == SEED for k, _ in outcome.trials[0].values) if outcome.trials else False

    def ci(x: Mapping[str, Any] | None) -> str:
        if not x:
            return "-"
        return f"{x['mean']:.4f}" + ("" if x["ci95"] is None else f" ± {x['ci95']:.4f}")

    head = [*keys, "seeds" if seeded else "trials", "dev", "test", "test before"]
    body = [[*(str(r["values"][k]) for k in keys), f"{r['finished']}/{r['trials']}", ci(r["dev"]), ci(r["test"]),
             ci(r["baseline_test"])] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    title = ("accuracy, mean ± 95% t-interval over fit.seed" if seeded else "accuracy per trial")
    return "\n".join([title + ":", fmt.format(*head), *(fmt.format(*b) for b in body)])

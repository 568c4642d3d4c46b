"""`dlc fit` as a function: check everything a user can get wrong, then create the run directory, train with a
checkpoint after every iteration, and write the final evaluation (result.json) and `<net>.fit.dln`.

Ordering rule: everything that can fail because of user input (the network, the overrides, the data directory, the
task, the field mapping, the model) is checked *before* the run directory is created, and a resume is validated
before anything in the run directory is touched — so a user mistake never leaves or overwrites state.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TextIO

from dlc import __version__
from dlc.app.models import close_lms, open_lms, usage_totals, backend_info
from dlc.app.prechecks import check_before_run, check_capabilities
from dlc.app.targets import Network, graph_of_run, load_network
from dlc.artifacts import manifest
from dlc.artifacts.identity import config_identity, data_identity, graph_identities, graph_identity, resolved_config
from dlc.artifacts.records import (Baseline, Checkpoint, ClassReport, FitResult, IterationRecord, RunConfig,
                                   SplitPredictions, total_tokens)
from dlc.artifacts.rundir import (BACKEND, GRAPH, RESULT, SOURCE, RunDir, check_new_run_dir, check_resumable,
                                  check_runs_root)
from dlc.data import Splits, load_splits
from dlc.errors import DlcArtifactError, DlcUsageError, redact
from dlc.train import trainer as tr
from dlc.train.evaluation import EvalResult, evaluate
from dlc.train.plan import plan as fit_plan
from dlc.ir import Example, Graph
from dlc.lang import compiler, rewrite, writeback
from dlc.lm.base import LM
from dlc.report.progress import FitProgress
from dlc.report.stats import classification_report, report_from_counts


def load_data(graph: Graph, data_dir: str | None) -> Splits:
    """The run's splits (dlc.data.load_splits); `data_dir` (--data-dir) wins over the data block's."""
    return load_splits(graph.data, graph.inputs, seed=graph.fit.seed, data_dir=data_dir or None)


class FitObserver(Protocol):
    """Hears of a fit as it goes (experiment tracking): the run directory once it exists (new or resumed, lock
    held, its trace cut back to the checkpoint), then each iteration record once it is checkpointed. It must not
    raise: a fit never fails for it. A finished run resumed trains nothing and calls neither."""

    def started(self, run: RunDir) -> None: ...

    def iteration(self, rec: IterationRecord) -> None: ...


@dataclass
class FitOutcome:
    run_dir: Path | None
    result: FitResult | None
    plan: dict[str, Any]
    fit_dln: Path | None = None
    interrupted: bool = False


def _print(out: TextIO | None, *args: Any) -> None:
    if out is not None:
        print(*args, file=out, flush=True)


def format_plan(plan: Mapping[str, Any], indent: int = 0) -> str:
    """The engine's cost plan (dlc.train.trainer.plan) as the table `dlc fit` prints before starting."""
    pad = "  " * indent
    if "per_iteration" not in plan:   # an unknown shape: plain nested key: value lines
        lines = []
        for k, v in plan.items():
            if isinstance(v, Mapping):
                lines += [f"{pad}{k}:", format_plan(v, indent + 1)]
            else:
                lines.append(f"{pad}{k}: {v}")
        return "\n".join(lines)
    per = plan.get("per_iteration") or {}
    val = plan.get("per_validation") or {}
    w = max([len(k) for k in list(per) + list(val)] + [10])
    if not plan.get("iterations"):      # iters = 0: an evaluation of the initial prompts (0-shot / n-shot)
        lines = [f"{pad}no training iterations: the initial prompts are evaluated as they are"]
    else:
        lines = [f"{pad}{plan.get('iterations')} training iteration(s), batch {plan.get('batch_size')}, "
                 f"trained layers: {', '.join(plan.get('trained_layers') or []) or '(none)'}",
                 f"{pad}LLM requests per training iteration (exact upper bound; duplicates are sent once): "
                 f"{plan.get('per_iteration_total', sum(per.values())):,}"]
        lines += [f"{pad}  {k:<{w}} {v:>9,}" for k, v in per.items()]
        if "max_completion_tokens_per_iteration" in plan:
            lines.append(f"{pad}  {'completion tokens at most':<{w}} "
                         f"{plan['max_completion_tokens_per_iteration']:>9,}")
    lines.append(f"{pad}LLM requests per validation on dev: {sum(val.values()):,} "
                 f"({plan.get('validations', '?')} validation(s))")
    lines += [f"{pad}  {k:<{w}} {v:>9,}" for k, v in val.items()]
    lines.append(f"{pad}total LLM requests at most: {plan.get('total_requests', 0):,} "
                 "(+ the final dev/test evaluations)")
    return "\n".join(lines)


def fit(target: str | None = None, *, overrides: Mapping[str, str] | None = None, run_dir: str | None = None,
        runs_root: str = "runs", resume: str | None = None, dry_run: bool = False, no_cache: bool = False,
        cache_dir: str | None = None, data_dir: str | None = None, out: TextIO | None = sys.stdout,
        err: TextIO | None = sys.stderr, progress: bool | None = None, argv: Sequence[str] = (),
        observer: FitObserver | None = None) -> FitOutcome:
    """Train a network's prompts; see the module docstring for the order of checks and rundir.py for the files.
    `observer` (e.g. dlc.app.tracking.MlflowTracker) hears of the run directory and of every iteration record.

    Raises DlcError for user mistakes and KeyboardInterrupt (after the last clean checkpoint) on Ctrl-C."""
    overrides = dict(overrides or {})
    run: RunDir | None = None
    ck: Checkpoint | None = None
    if resume is not None:
        if run_dir is not None:
            raise DlcUsageError("--resume and --run-dir cannot be combined", code="E112",
                                hint="--resume RUN continues the run in RUN")
        run = RunDir.open(resume)
        base_cfg = run.config()
        given = None
        if target is not None:
            given = load_network(target, overrides)
        elif overrides:
            # `--resume RUN --set k=v`: the run's own source with its original overrides plus the new ones
            src = run.source_text()
            if src is None:
                raise DlcUsageError(f"--set needs the run's .dln source, and {run.path} has none", code="E103")
            merged = {**base_cfg.overrides, **overrides}
            g = compiler.compile_source(src, base_cfg.source_path or str(run.file(SOURCE)), merged)
            given = Network(g, base_cfg.net or g.name, src, base_cfg.source_path)
        if given is not None:
            # what the user named must be the run's network and config (compare before anything is written)
            check_resumable(run, graph_sha256=graph_identities(given.graph),
                            config_sha256=config_identity(given.graph))
        cfg = check_resumable(run, graph_sha256=None, config_sha256=None)
        graph = graph_of_run(run, prompts="initial")
        if config_identity(graph) != cfg.config_sha256:
            raise DlcArtifactError(f"corrupted run directory: {run.path / GRAPH} does not match the config hash",
                                   code="E502")
        net = Network(graph, base_cfg.net or graph.name, run.source_text(), base_cfg.source_path)
        ck = run.checkpoint()
        data_dir = data_dir or base_cfg.data_dir
    else:
        net = load_network(target, overrides)
        graph = net.graph
    splits = load_data(graph, data_dir)
    if resume is not None and run is not None:
        now = data_identity(splits)
        if now != run.config().data_identity:
            raise DlcArtifactError(f"cannot resume {run.path}: the dataset splits differ from the ones the run "
                                   "started with", code="E509",
                                   hint="pass the --data-dir the run used, or start a new run")
    check_before_run(graph, splits)           # targets and templates against the data (E819, E353), before any run
    plan = fit_plan(graph, graph.fit, len(splits.train), len(splits.dev))
    _print(out, f"network {graph.name}: {len(graph.order)} layer(s) {', '.join(graph.order)}; output {graph.output}")
    _print(out, f"data: train {len(splits.train)}, dev {len(splits.dev)}, test {len(splits.test)}")
    _print(out, "plan:")
    _print(out, format_plan(plan, 1))
    if dry_run:
        _print(out, "dry run: nothing was trained, no run directory was created")
        return FitOutcome(None, None, plan)
    if run_dir is not None:
        check_new_run_dir(Path(run_dir))      # E130 before any model is loaded (RunDir.create decides a race)
    elif run is None:
        check_runs_root(Path(runs_root))

    if run is not None and run.is_finished():
        res = run.result()
        assert res is not None
        _print(out, f"{run.path} already finished (nothing to resume)")
        fit_dln = _report_result(out, run, res, graph.fit.iters)
        return FitOutcome(run.path, res, plan, fit_dln)

    lms = open_lms(graph, no_cache=no_cache, cache_dir=cache_dir)
    try:
        check_capabilities(graph, lms)        # what the probe found against what the fit needs (E628), before any run
        if run is None:
            # built under a temporary name with its lock held, then renamed into place: nothing is written where
            # another run could see it, and the lock is still held when training starts (rundir.RunDir.create)
            run = RunDir.create(net.name, root=runs_root, explicit=run_dir,
                                populate=lambda r: _start_run(r, net, graph, splits, lms, overrides, data_dir, argv))
            _print(out, f"run directory: {run.path}")
        else:
            _print(out, f"resuming {run.path} after iteration {ck.iteration if ck else 0}")
        with run.lock():
            return _train(run, net, graph, splits, lms, ck, plan, out=out, err=err, progress=progress,
                          observer=observer)
    finally:
        close_lms(lms)


def _start_run(run: RunDir, net: Network, graph: Graph, splits: Any, lms: Mapping[str, LM],
               overrides: Mapping[str, str], data_dir: str | None, argv: Sequence[str]) -> None:
    if net.source_text is not None:
        run.write_text(SOURCE, net.source_text)
    run.write_json(GRAPH, manifest.to_json(graph))
    run.write_json(BACKEND, backend_info(graph, lms))
    info = getattr(getattr(splits, "info", None), "name", None)
    blocks = resolved_config(graph)
    run.write_config(RunConfig(
        net=net.name, graph_sha256=graph_identity(graph), config_sha256=config_identity(graph), seed=graph.fit.seed,
        fit=blocks["fit"], data=blocks["data"], models=blocks["models"], overrides=dict(overrides),
        data_identity=data_identity(splits), data_dir=str(data_dir) if data_dir else None, task=info,
        graph_name=graph.name, source_path=net.source_path, artifact_path=net.artifact_path,
        dlc_version=__version__, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        argv=tuple(argv)))


def _train(run: RunDir, net: Network, graph: Graph, splits: Any, lms: Mapping[str, LM],
           ck: Checkpoint | None, plan: Mapping[str, Any], *, out: TextIO | None, err: TextIO | None,
           progress: bool | None, observer: FitObserver | None = None) -> FitOutcome:
    cfg = run.config()
    state = None
    base_usage: Mapping[str, Any] = {}
    if ck is not None:
        run.truncate_trace(ck.trace_records)
        state = tr.TrainState.from_json(ck.state)
        base_usage = ck.usage
    else:
        run.truncate_trace(0)
    if observer is not None:
        observer.started(run)       # after the truncation: it sees exactly the checkpointed iterations
    trainer = tr.Trainer(graph, lms, splits.train, splits.dev, graph.fit, state=state)
    t_start, base_wall = time.perf_counter(), float(base_usage.get("wall_seconds", 0.0) or 0.0)

    def totals() -> dict[str, Any]:
        """Usage so far, with the wall time of training (all processes of a resumed run, model loading excluded)."""
        u = usage_totals(lms, base_usage)
        u["wall_seconds"] = round(base_wall + time.perf_counter() - t_start, 3)
        return u

    trace = run.trace()
    n_records = len(trace)
    # progress counts training iterations, as `dlc runs` and the checkpoint do (state.iteration, 0..iters); the
    # trainer's last step only validates (trainer.py) and is reported as the final validation, not one more iteration
    total = graph.fit.iters
    devs = [r.dev for r in trace if r.dev is not None]
    best = max(devs) if devs else None
    live = progress if progress is not None else None
    try:
        with FitProgress(total, completed=trainer.state.iteration, description=net.name,
                         stream=err if err is not None else io.StringIO(), live=live) as bar:
            while not trainer.finished():
                rec = IterationRecord.from_json(trainer.step(), source="the trainer's iteration record")
                usage = totals()
                if rec.tokens is None:
                    rec = dataclasses.replace(rec, tokens=total_tokens(usage))
                run.append_trace(rec)
                n_records += 1
                run.write_checkpoint(Checkpoint(
                    iteration=trainer.state.iteration, state=trainer.state.to_json(), usage=usage,
                    trace_records=n_records, graph_sha256=cfg.graph_sha256, config_sha256=cfg.config_sha256,
                    written_at=time.time()))
                if observer is not None:
                    observer.iteration(rec)
                if rec.dev is not None:
                    best = rec.dev if best is None else max(best, rec.dev)
                note = (f"stopped: {rec.stopped}" if rec.stopped else
                        "final validation" if trainer.finished() else "")
                bar.update(trainer.state.iteration, dev_accuracy=rec.dev, best_dev=best,
                           tokens=total_tokens(usage), note=note)
    except KeyboardInterrupt as e:
        _print(err, f"\ninterrupted: the last checkpoint ({run.path / 'checkpoint.json'}) is intact; "
                    f"continue with `dlc fit --resume {run.path}`")
        e.reported = True          # type: ignore[attr-defined]   # the CLI does not say "interrupted" again
        raise
    result = _finish(run, net, graph, splits, lms, trainer, totals)
    write_html_report(run, err)
    fit_dln = _report_result(out, run, result, graph.fit.iters)
    return FitOutcome(run.path, result, dict(plan), fit_dln)


def _report_result(out: TextIO | None, run: RunDir, result: FitResult, iters: int | None) -> Path | None:
    """The end of a fit (also printed when resuming a finished run): accuracies before -> after, usage, files.
    Returns the learned network's path when it exists."""
    fit_dln = run.path / f"{result.net}.fit.dln"
    stopped = stopped_line(result, iters)
    if stopped:
        _print(out, stopped)
    _print(out, f"dev accuracy  {_fmt(result.baseline.dev_accuracy)} -> {_fmt(result.dev_accuracy)}")
    _print(out, f"test accuracy {_fmt(result.baseline.test_accuracy)} -> {_fmt(result.test_accuracy)}")
    u = result.usage
    _print(out, f"usage: {u.get('calls', 0):,} calls, {u.get('prompt_tokens', 0):,} prompt + "
                f"{u.get('completion_tokens', 0):,} completion tokens, {u.get('cache_hits', 0):,} cache hits")
    _print(out, f"result: {run.path / RESULT}")
    if fit_dln.exists():
        _print(out, f"learned network: {fit_dln}")
    if (run.path / "report.html").exists():
        _print(out, f"report: {run.path / 'report.html'}")
    return fit_dln if fit_dln.exists() else None


def write_html_report(run: RunDir, err: TextIO | None) -> None:
    """RUN/report.html (dlc report) at the end of a fit. The run is complete without it, so a failure to write it
    (a full disk, a bug in the report) is a warning and the fit ends normally; `dlc report RUN` writes it again."""
    try:
        from dlc.report.html import write_report

        write_report([run.path])
    except Exception as e:  # noqa: BLE001 -- nothing of the run may be lost for its report
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        _print(err, f"warning: the HTML report was not written ({redact(why)}); `dlc report {run.path}` writes it")


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def stop_reason(state: tr.TrainState) -> str | None:
    """Why training ended before its configured iterations (the trainer's `stopped` record), or None."""
    return next((h["stopped"] for h in reversed(state.history) if h.get("stopped")), None)


def stopped_line(result: FitResult, iters: int | None) -> str | None:
    """The line a fit stopped early prints: how far it got and why."""
    if not result.stopped:
        return None
    return (f"stopped early after {result.iterations} of {'?' if iters is None else iters} training "
            f"iteration(s): {result.stopped}")


def _evaluate(graph: Graph, prompts: Mapping[str, str], lms: Mapping[str, LM], examples: Sequence[Example],
              *, shots_from: Sequence[Example] = (), seed: int = 0,
              offsets: Mapping[str, Sequence[float]] | None = None) -> EvalResult | None:
    if not examples:
        return None
    return evaluate(graph, dict(prompts), lms, list(examples), n_shots=graph.fit.n_shots,
                    shots_from=tuple(shots_from), seed=seed, offsets=offsets)


def class_report(r: EvalResult, labels: Sequence[str]) -> ClassReport:
    """The per-class accuracy and confusion an evaluation already computed (a choice output), laid out over the
    graph's label names. A generated output has none: its exact-match statistics are computed from the predictions
    (so for a metric other than exact match, e.g. number_presence, the report's accuracy can differ from the run's)."""
    if r.confusion:
        return report_from_counts(r.confusion, labels, accuracy=float(r.accuracy), per_class=r.per_class)
    return classification_report(list(r.targets), list(r.predictions), labels)


def offsets_by_label(graph: Graph, offsets: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """{layer: [b...]} in label order -> {layer: {label: b}} (result.json, `.fit.dln`); empty vectors dropped."""
    return {n: dict(zip(graph.layers[n].output.label_names, (float(x) for x in v)))
            for n, v in sorted(offsets.items()) if v}


def _finish(run: RunDir, net: Network, graph: Graph, splits: Any, lms: Mapping[str, LM], trainer: tr.Trainer,
            totals: Callable[[], dict[str, Any]]) -> FitResult:
    """Final evaluation with the best prompts (and, for the gain, the initial ones), `.fit.dln`, result.json."""
    state = trainer.state
    best = dict(state.best_prompts or state.prompts)
    best_offsets = {k: list(v) for k, v in state.best_offsets.items()}
    initial = graph.prompts()
    evals: dict[tuple[str, str], EvalResult | None] = {}
    for tag, prompts, offs in (("baseline", initial, None), ("final", best, best_offsets)):
        for split in ("dev", "test"):
            evals[(tag, split)] = _evaluate(graph, prompts, lms, getattr(splits, split), shots_from=splits.train,
                                            seed=graph.fit.seed, offsets=offs)
    labels = graph.layers[graph.output].output.label_names

    def acc(tag: str, split: str) -> float | None:
        r = evals[(tag, split)]
        return None if r is None else float(r.accuracy)

    def details(split: str) -> ClassReport | None:
        r = evals[("final", split)]
        return None if r is None else class_report(r, labels)

    def predictions(split: str) -> SplitPredictions | None:
        """Per example, before and after training: a paired comparison needs the same ids on both sides."""
        b, f = evals[("baseline", split)], evals[("final", split)]
        if b is None or f is None:
            return None
        return SplitPredictions(ids=tuple(f.ids), targets=tuple(f.targets), baseline=tuple(b.predictions),
                                final=tuple(f.predictions))

    fit_dln = None
    if net.source_text is not None:
        changed = {k: v for k, v in best.items() if v != initial.get(k)}   # untouched prompts keep their quoting
        text = rewrite.rewrite_prompts(net.source_text, net.source_path or f"{net.name}.dln", changed,
                                       offsets_by_label(graph, best_offsets))
        fit_dln = run.path / f"{net.name}.fit.dln"
        # the run's settings the source lacks (--set values, data paths relative to the source) written in too
        text, missing = writeback.write_back(text, str(fit_dln), graph)
        if missing:
            text = (f"# dlc fit: not written back here (the run's graph.json has them): {', '.join(missing)}\n"
                    + text)
        run.write_text(fit_dln.name, text)
    result = FitResult(
        net=net.name, seed=graph.fit.seed, dev_accuracy=acc("final", "dev"), test_accuracy=acc("final", "test"),
        baseline=Baseline(dev_accuracy=acc("baseline", "dev"), test_accuracy=acc("baseline", "test"),
                          prompts=initial),
        prompts=best, offsets=offsets_by_label(graph, best_offsets), iterations=state.iteration,
        best_dev_during_training=state.best_dev, usage=totals(), dev=details("dev"), test=details("test"),
        predictions={"dev": predictions("dev"), "test": predictions("test")},
        fit_dln=str(fit_dln) if fit_dln else None,
        finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), stopped=stop_reason(state))
    run.write_result(result)
    return result


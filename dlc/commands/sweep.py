"""`dlc sweep NET --grid BLOCK.KEY=V1,V2,... [--grid ...] [--set ...] [--runs-root DIR]`: one fit per combination,
on Ray when it is installed (a cluster with --address / RAY_ADDRESS), then accuracies with mean ± 95% interval."""
from __future__ import annotations

import argparse
import json
import sys

from dlc import app as api
from dlc.errors import DlcUsageError
from dlc.fsutil import check_output, write_output


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="fit every combination of settings (on Ray when installed) and summarize",
        description="Fit a network once per combination of --grid values, each an ordinary fit with its own run "
                    "directory under --runs-root, then print accuracies as mean ± 95% t-interval over fit.seed. "
                    "Run the same command again to resume: finished trials are kept, interrupted ones continue "
                    "from their checkpoint.")
    p.add_argument("net", help="a .dln file or a compiled .json artifact")
    p.add_argument("--grid", action="append", default=[], metavar="BLOCK.KEY=V1,V2,...",
                   help="values to sweep, e.g. --grid fit.seed=13,42,25 --grid data.task=trec,subj (repeatable)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                   help="override a .dln block key in every trial, e.g. --set fit.iters=4 (repeatable)")
    p.add_argument("--runs-root", metavar="DIR", default="runs", help="where run directories go (default runs)")
    p.add_argument("--address", metavar="ADDR",
                   help="a Ray cluster (default $RAY_ADDRESS; none: a local Ray of its own), e.g. ray://HEAD:10001, "
                        "HEAD:6379, or auto for the one `ray start` runs on this machine")
    p.add_argument("--no-ray", action="store_true", help="run the trials one after another in this process")
    p.add_argument("--workers", type=int, metavar="N",
                   help="at most N trials at once (default: as many as the CPUs allow for embedded models, "
                        "4 against endpoints)")
    p.add_argument("--cpus-per-trial", type=float, metavar="N",
                   help="CPUs Ray reserves per trial (default: up to 4 for an embedded model, 0 for endpoints)")
    p.add_argument("--fresh", action="store_true",
                   help="start new run directories even where finished or interrupted ones exist")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first trial that fails")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the LLM response cache")
    p.add_argument("--cache-dir", metavar="DIR", help="LLM cache directory (default: the backend's)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset directory (default $DLC_DATA_DIR or the user cache)")
    p.add_argument("--mlflow", action="store_true",
                   help="log each trial to MLflow under one parent run (on when MLFLOW_TRACKING_URI is set)")
    p.add_argument("--mlflow-experiment", metavar="NAME", help="MLflow experiment (default: the network's name)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow even if MLFLOW_TRACKING_URI is set")
    p.add_argument("--json", metavar="FILE", help="also write every trial and the summary as JSON ('-': stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dlc.app import sweep as sw

    if args.workers is not None and args.workers < 1:
        raise DlcUsageError(f"--workers {args.workers}: must be at least 1", code="E108")
    if args.cpus_per_trial is not None and not args.cpus_per_trial > 0:
        raise DlcUsageError(f"--cpus-per-trial {args.cpus_per_trial}: must be more than 0", code="E108")
    if args.no_ray and args.address:
        raise DlcUsageError("--no-ray and --address cannot be combined", code="E108")
    if args.json and args.json != "-":
        check_output(args.json, "--json")          # before any trial runs, not after the last one
    sets = api.parse_sets(args.sets)
    grid = sw.parse_grid(args.grid, sets)
    out = sys.stderr if args.json == "-" else sys.stdout
    trials = sw.plan_trials(args.net, sets, grid, sys.stderr)      # every combination compiles, or nothing runs
    parent = None
    if not args.no_mlflow:
        from dlc.app.tracking import sweep_parent

        parent = sweep_parent(args.mlflow, experiment=args.mlflow_experiment, net=trials[0].net, grid=grid,
                              sets=sets, err=sys.stderr)
    mlflow = None if parent is None else {"experiment": parent.experiment, "parent_run_id": parent.run_id,
                                          "tracking_uri": parent.tracking_uri}
    try:
        outcome = sw.sweep(args.net, grid, trials=trials, sets=sets, runs_root=args.runs_root, data_dir=args.data_dir,
                           cache_dir=args.cache_dir, no_cache=args.no_cache, fresh=args.fresh,
                           use_ray=False if args.no_ray else (True if args.address else None), address=args.address,
                           workers=args.workers, cpus_per_trial=args.cpus_per_trial, fail_fast=args.fail_fast,
                           mlflow=mlflow, out=out, err=sys.stderr)
    except BaseException as e:
        if parent is not None:
            parent.aborted(interrupted=isinstance(e, KeyboardInterrupt))
        raise
    print("", file=out)
    print(sw.format_summary(outcome), file=out, flush=True)
    doc = outcome.to_json()
    if args.json == "-":
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    elif args.json:
        from dlc.artifacts.canonical import pretty_json

        write_output(args.json, pretty_json(doc), "--json")
        print(f"summary written to {args.json}", file=out)
    if parent is not None:
        parent.sweep_finished(doc, interrupted=outcome.interrupted)
    if outcome.interrupted:
        print("interrupted: run the same command again to continue (finished trials are kept)", file=sys.stderr)
        err = KeyboardInterrupt()
        err.reported = True                  # type: ignore[attr-defined]
        raise err
    bad = outcome.failed
    if bad:
        raise DlcUsageError(f"{len(bad)} of {len(outcome.trials)} trial(s) did not finish", code="E143",
                            hint="run the same command again to retry them (finished trials are kept); "
                                 "each failed trial's line above says why")
    return 0

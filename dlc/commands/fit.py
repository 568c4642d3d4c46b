"""`dlc fit [net.dln | compiled.json] [--set block.key=value ...] [--run-dir DIR] [--resume RUN] [--dry-run]
[--mlflow]`: the fit, logged to MLflow when asked (dlc.app.tracking)."""
from __future__ import annotations

import argparse
import sys

from dlc import app as api


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit", help="train a network's prompts (a run directory under runs/)",
        description="Train every trainable prompt of a network. With no NET, fits the last `dlc compile`d network.")
    p.add_argument("net", nargs="?", help="a .dln file, a compiled .json artifact (default: the last compiled)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                   help="override a .dln block key, e.g. --set fit.iters=4 --set data.task=navigate (repeatable)")
    p.add_argument("--run-dir", metavar="DIR", help="put the run directory here (default runs/<net>-<timestamp>)")
    p.add_argument("--runs-root", metavar="DIR", default="runs", help="where new run directories go (default runs)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the plan and LLM call counts, then stop")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the LLM response cache")
    p.add_argument("--cache-dir", metavar="DIR", help="LLM cache directory (default: the backend's)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset directory (default $DLC_DATA_DIR or the user cache)")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a live progress bar")
    p.add_argument("--mlflow", action="store_true",
                   help="log params, metrics per iteration and artifacts to MLflow (on by default when "
                        "MLFLOW_TRACKING_URI is set; needs pip install 'dlc[mlflow]')")
    p.add_argument("--mlflow-experiment", metavar="NAME",
                   help="MLflow experiment (default $MLFLOW_EXPERIMENT_NAME, else the network's name)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow even if MLFLOW_TRACKING_URI is set")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = api.parse_sets(args.sets)
    tracker = None
    if not args.dry_run and not args.no_mlflow:
        from dlc.app.tracking import tracker_for   # mlflow is imported only when tracking is on

        tracker = tracker_for(args.mlflow, experiment=args.mlflow_experiment, err=sys.stderr)
    try:
        outcome = api.fit(args.net, overrides=overrides, run_dir=args.run_dir, runs_root=args.runs_root,
                          resume=args.resume, dry_run=args.dry_run, no_cache=args.no_cache, cache_dir=args.cache_dir,
                          data_dir=args.data_dir, progress=False if args.no_progress else None, argv=sys.argv[1:],
                          out=sys.stdout, err=sys.stderr, observer=tracker)
    except BaseException as e:
        if tracker is not None:
            tracker.aborted(interrupted=isinstance(e, KeyboardInterrupt))
        raise
    if tracker is not None and outcome.run_dir is not None:
        tracker.finished(outcome.run_dir, outcome.result)
        if tracker.run_id:
            print(f"mlflow run: {tracker.run_id} (experiment {tracker.experiment_id})", file=sys.stdout)
    return 0 if outcome is not None else 1

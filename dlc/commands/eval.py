"""`dlc eval RUN|net.fit.dln ... [--split test] [--seeds 13,42,25]`: accuracy, per class, confusion, mean ± 95% CI."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from dlc import app as api
from dlc.fsutil import check_output, write_output
from dlc.report.stats import ClassReport, format_class_report

if TYPE_CHECKING:  # dlc.app.evaluate loads the data and fit layers (numpy): not at CLI start-up
    from dlc.app.evaluate import EvalReport


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate runs or networks: accuracy, per-class, confusion, mean ± 95%% CI",
        description="Evaluate the learned prompts of runs (or the prompts of .dln/.fit.dln files) on a split. "
                    "Several targets and/or seeds give mean ± 95% t-interval.")   # a description is not %-formatted
    p.add_argument("targets", nargs="+", metavar="RUN|NET", help="run directories or .dln / .fit.dln / .json files")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"), help="which split (default test)")
    p.add_argument("--seeds", metavar="S1,S2,...", help="seeds (they draw n-shot demonstrations), e.g. 13,42,25")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                   help="override a block key of the networks, e.g. --set data.test_size=100")
    p.add_argument("--data-dir", metavar="DIR", help="dataset directory")
    p.add_argument("--no-cache", action="store_true", help="do not use the LLM response cache")
    p.add_argument("--cache-dir", metavar="DIR", help="LLM cache directory")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON ('-' for stdout only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.json and args.json != "-":
        check_output(args.json, "--json")        # before the evaluation, not after it
    rep = api.evaluate_targets(args.targets, split=args.split, seeds=api.parse_seeds(args.seeds),
                               data_dir=args.data_dir, no_cache=args.no_cache, cache_dir=args.cache_dir,
                               overrides=api.parse_sets(args.sets))
    if args.json == "-":
        print(json.dumps(rep.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(format_eval(rep))
    if args.json:
        from dlc.artifacts.rundir import dumps

        write_output(args.json, dumps(rep.to_json()), "--json")
        print(f"report written to {args.json}", file=sys.stderr)
    return 0


def _same(a: Any, b: Any) -> bool:
    """Equal reports, NaN included (an absent class has accuracy NaN, and NaN != NaN made every seed its own
    block): compared as canonical JSON text, where NaN is spelled alike."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def format_eval(rep: EvalReport) -> str:
    """Per target: accuracy, per-class accuracy and confusion (one block when every seed gave the same result),
    then the mean ± 95% CI line."""
    parts = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rep.rows:
        groups.setdefault(row["target"], []).append(row)
    for target, changes in rep.changed.items():
        parts.append(f"== {target}: the run's own settings, with --set changing "
                     + ("; ".join(changes) if changes else "nothing (every value was the run's already)"))
    for target, rows in groups.items():
        blocks = [rows] if all(_same(r["report"], rows[0]["report"]) for r in rows) else [[r] for r in rows]
        for b in blocks:
            r = b[0]["report"]
            cr = ClassReport.from_json(r)
            seeds = ", ".join(str(x["seed"]) for x in b)
            same = " (identical)" if len(b) > 1 else ""
            parts.append(format_class_report(cr, title=f"== {target}  split {rep.split}  seed{'s' if len(b) > 1 else ''}"
                                                       f" {seeds}{same}"))
    acc = rep.summary["accuracy"]
    ci = "n/a (one evaluation)" if acc["ci95"] is None else f"± {acc['ci95']:.4f} (95% t-interval)"
    parts.append(f"== {rep.split} accuracy over {acc['n']} evaluation(s): mean {acc['mean']:.4f} {ci}")
    return "\n\n".join(parts)

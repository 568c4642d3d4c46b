"""`dlc runs`: the run directories with their status and scores."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dlc import app as api
from dlc.errors import DlcUsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("runs", help="list runs with their scores",
                              description="A table of the run directories under ROOT (default runs/).")
    p.add_argument("root", nargs="?", default="runs", help="directory holding run directories (default runs)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.set_defaults(func=run)


def _f(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def run(args: argparse.Namespace) -> int:
    if Path(args.root).exists() and not Path(args.root).is_dir():
        raise DlcUsageError(f"{args.root} is a file, not a directory of runs", code="E104",
                            hint="pass the directory that holds the run directories (default runs)")
    rows = api.list_runs(args.root)
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return 0
    if not rows:
        print(f"no runs under {args.root}/ (start one with `dlc fit net.dln`)")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    for col, just in (("run", "left"), ("status", "left"), ("iters", "right"), ("seed", "right"),
                      ("dev", "right"), ("test", "right"), ("test before", "right"), ("tokens", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        iters = f"{r.get('done_iters', 0)}/{r.get('iters', '?')}" if r.get("status") != "corrupted" else "-"
        status = "stopped" if r.get("stopped") else r.get("status", "?")     # done before its iterations
        t.add_row(r["name"], status, iters, str(r.get("seed", "-")), _f(r.get("dev_accuracy")),
                  _f(r.get("test_accuracy")), _f(r.get("baseline_test_accuracy")),
                  f"{r['tokens']:,}" if isinstance(r.get("tokens"), int) else "-")
    print(f"runs under {args.root}/")
    console = Console(soft_wrap=True)
    if not console.is_terminal:     # a pipe or a file: no width to fit, so run names are never cut
        console = Console(soft_wrap=True, width=100_000)
    console.print(t)
    for r in rows:
        if r.get("stopped"):
            print(f"{r['name']}: stopped after {r.get('done_iters', 0)} of {r.get('iters', '?')} iterations: "
                  f"{r['stopped']}")
    return 0

"""`dlc report RUN [RUN ...] [-o FILE]`: a static HTML report of a run, or several runs side by side."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="write an HTML report of a run (or compare several runs)",
        description="Write one self-contained HTML file (no script, nothing loaded from the network; it opens from "
                    "disk): for one run, its network, prompts before -> after, learning curve, candidates of every "
                    "iteration, hidden samples, confusion matrices, calibration and cost (default RUN/report.html, "
                    "also written at the end of every fit); for several runs, a side-by-side comparison of their "
                    "accuracies with 95% intervals, prompts and costs (default ./compare.html).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (runs/<net>-<timestamp>)")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write the HTML file (a directory: the default "
                                                           "file name inside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dlc.report.html import write_report

    print(f"report: {write_report(args.runs, args.output)}")
    return 0

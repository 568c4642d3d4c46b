"""`dlc compile net.dln [-o OUT] [--set k=v ...]`: check a network and write its JSON artifact.

By default the artifact goes to `.dlc/<network>.json` under the current directory, and `.dlc/LAST` remembers it so
`dlc fit` with no argument finds the network that was compiled last.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dlc.lang import compiler
from dlc.artifacts import manifest
from dlc.lang.overrides import parse_sets


def add_set_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE", default=[],
                   help="override a setting, e.g. fit.iters=5, data.task=subj, layer.h.prompt=Think., "
                        "model.default.model=tiny, output.metric=exact_match (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compile", help="check a .dln network and write its compiled JSON artifact",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="the .dln file")
    p.add_argument("-o", "--output", metavar="OUT", help="where to write the artifact (default .dlc/<name>.json)")
    add_set_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    graph = compiler.compile_file(args.path, parse_sets(args.sets))
    out = Path(args.output) if args.output else manifest.default_path(graph)
    manifest.check_last()                 # both outputs can be written, or neither is
    manifest.write(graph, out)
    manifest.record_last(out)
    print(out)
    return 0

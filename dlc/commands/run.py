"""`dlc run net.fit.dln < inputs.jsonl > outputs.jsonl`: inference with a network's prompts, JSONL in and out."""
from __future__ import annotations

import argparse
import sys

from dlc import app as api


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run a network on JSONL inputs from stdin, JSONL out",
        description="Each stdin line is a JSON object with the network's inputs (by input name or by the data "
                    "block's field name); each output line is {\"id\"?, \"output\", \"layers\": {layer: text}}.")
    p.add_argument("net", metavar="NET|RUN", help="a .fit.dln / .dln / compiled .json file or a run directory")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="BLOCK.KEY=VALUE",
                   help="override a block key (on a run: on top of the run's own settings), e.g. "
                        "--set model.default.model=small")
    p.add_argument("--batch", type=int, default=16, help="examples per LLM batch (default 16)")
    p.add_argument("--no-layers", action="store_true", help="only the output, not every layer's text")
    p.add_argument("--no-cache", action="store_true", help="do not use the LLM response cache")
    p.add_argument("--cache-dir", metavar="DIR", help="LLM cache directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    n = api.run_inference(args.net, sys.stdin, sys.stdout, no_cache=args.no_cache, cache_dir=args.cache_dir,
                          batch=max(1, args.batch), hidden=not args.no_layers,
                          overrides=api.parse_sets(args.sets), err=sys.stderr)
    print(f"{n} example(s)", file=sys.stderr)
    return 0

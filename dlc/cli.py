"""`dlc` command line: argparse, one module per subcommand under `dlc/commands/`, one exit-code policy.

Exit status: 0 ok, 1 user error (a DlcError, printed without a traceback), 2 bad arguments (argparse),
3 a bug in dlc (traceback printed), 130 interrupted by Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from typing import Sequence

from dlc import __version__
from dlc.errors import DlcError, redact, render_error

# Each name is a module `dlc.commands.<name>` defining `register(subparsers)`; the parser it adds sets
# `func=run(args) -> int`. Modules that are not present are skipped.
COMMANDS = ("compile", "show", "fit", "eval", "run", "runs", "report", "sweep", "data", "serve", "selftest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlc", description="Compile and train Deep Language Networks.")
    parser.add_argument("--version", action="version", version=f"dlc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        modname = f"dlc.commands.{name.replace('-', '_')}"
        if importlib.util.find_spec(modname) is None:
            continue
        importlib.import_module(modname).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except DlcError as e:
        print(render_error(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if not getattr(e, "reported", False):      # `dlc fit` already said where to resume from
            print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception:  # a bug: say so, with the traceback, and a distinct status
        print(redact(traceback.format_exc()), end="", file=sys.stderr)   # a bug's text may quote a URL or key
        print(f"dlc {__version__}: an unexpected error occurred (this is a bug in dlc)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())

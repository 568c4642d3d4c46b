"""`dlc show net.dln|manifest.json|RUN_DIR [--format text|dot|mermaid|json|svg|png] [-o FILE]`.

A network (source or compiled) is summarised or drawn; a run directory (it holds result.json or checkpoint.json)
is shown with its result, its learned prompts and its learning curve (a PNG next to it).
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from dlc import ir
from dlc.lang import compiler
from dlc.artifacts import manifest
from dlc.report import viz
from dlc.commands.compile import add_set_argument
from dlc.lang.overrides import parse_sets
from dlc.errors import DlcArtifactError, DlcUsageError
from dlc.fsutil import check_output, write_output

FORMATS = ("text", "dot", "mermaid", "json", "svg", "png")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("show", help="summarise or draw a network, or show a run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a .dln file, a compiled .json manifest, or a run directory")
    p.add_argument("--format", "-f", choices=FORMATS, default="text")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout (svg/png: default "
                                                           "<network>.<format>)")
    add_set_argument(p)
    p.set_defaults(func=run)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "result.json").exists() or (path / "checkpoint.json").exists())


def load_graph(path: str, sets: dict[str, str] | None = None) -> ir.Graph:
    p = Path(path)
    if p.is_dir():      # before the suffix: a directory named d.json is no artifact either (E501, as eval/fit say)
        raise DlcArtifactError(f"{p} is a directory but not a run directory (no result.json or checkpoint.json)",
                               code="E501", hint="pass a .dln file, a compiled .json, or a run directory")
    if p.suffix == ".json":
        graph = manifest.read(p)
        if sets:
            from dlc.app.targets import recompile_artifact
            return recompile_artifact(graph, p, sets)[0]
        return graph
    return compiler.compile_file(p, sets)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if args.output:
        check_output(args.output, "-o")          # before anything is computed or drawn
    if is_run_dir(path):
        from dlc.report.stats import plot_suffixes

        kinds = plot_suffixes()
        if args.output and kinds is not None and Path(args.output).suffix.lower() not in ("", *kinds):   # "": png
            raise DlcUsageError(f"-o {args.output}: a run's learning curve is written as one of "
                                + " ".join(kinds), code="E109",
                                hint="name the file e.g. curve.png (or curve.svg, curve.pdf)")
        report = importlib.import_module("dlc.report.stats")
        return int(report.show_run(path, args) or 0)
    graph = load_graph(args.path, parse_sets(args.sets))
    fmt = args.format
    if fmt in ("svg", "png"):
        out = viz.render_image(graph, fmt, args.output or f"{graph.name}.{fmt}")
        print(out)
        return 0
    text = {"text": viz.to_text, "dot": viz.to_dot, "mermaid": viz.to_mermaid,
            "json": viz.to_json_summary}[fmt](graph)
    if args.output:
        write_output(args.output, text if text.endswith("\n") else text + "\n", "-o")
        print(args.output)
    else:
        print(text.rstrip("\n"))
    return 0

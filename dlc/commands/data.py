"""`dlc data list | show TASK | fetch TASK`: the built-in tasks, a look at their examples, and downloading them.

    dlc data list                          every task, its classes, metric, split sizes and whether its files are here
    dlc data show navigate --split dev -n 3
    dlc data show my.jsonl                 a custom file (JSONL/JSON/CSV/TSV) is shown the same way
    dlc data fetch navigate                download the public sources into the data dir (`all`: every paper task)

The data dir is --data-dir, else $DLC_DATA_DIR, else the user cache dir (`dlc data list` prints which).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlc import ir

# dlc.data (and numpy with it) is imported by the subcommands that use it, not when the CLI parser is built


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="the data directory (default: $DLC_DATA_DIR or the user "
                                                     "cache dir)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="list, inspect and download datasets", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_command", metavar="{list,show,fetch}")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])

    pl = sub.add_parser("list", help="the built-in tasks")
    _add_data_dir(pl)
    pl.set_defaults(func=run_list)

    ps = sub.add_parser("show", help="a task's description and its first examples")
    ps.add_argument("task", help="a built-in task (see `dlc data list`), a dataset file, or hf:name[:config]")
    ps.add_argument("--split", choices=("train", "dev", "test"), default="train")
    ps.add_argument("-n", type=int, default=5, metavar="N", help="how many examples (default 5)")
    ps.add_argument("--seed", type=_seed, default=42, help="run seed (generated train sets depend on it)")
    ps.add_argument("--field", action="append", default=[], metavar="INPUT=COLUMN",
                    help="map an input to a column of the file, as the data block's `fields` does (repeatable)")
    ps.add_argument("--target-field", metavar="COLUMN", help="the column holding the target (default: label)")
    ps.add_argument("--format", choices=("text", "jsonl"), default="text",
                    help="jsonl: one {\"id\", \"input\", \"target\"} object per line")
    _add_data_dir(ps)
    ps.set_defaults(func=run_show)

    pf = sub.add_parser("fetch", help="download a task's public source files into the data dir")
    pf.add_argument("task", help="a paper task, or `all`")
    pf.add_argument("--force", action="store_true", help="download again even if the files are present")
    _add_data_dir(pf)
    pf.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    from dlc.data import TASKS
    from dlc.data.store import resolve_data_dir

    root, origin = resolve_data_dir(args.data_dir)
    rows = [("TASK", "KIND", "CLASSES", "METRIC", "TRAIN/DEV/TEST", "FILES")]
    for t in TASKS.values():
        classes = ",".join(t.label_names) if t.labels else f"({t.output})"
        sizes = "/".join(str(n) for n in t.sizes) if t.sizes else "?"
        if t.kind == "generated":
            files = "none needed"
        else:
            have = sum((root / f).is_file() for f in t.files)
            files = "present" if have == len(t.files) else f"missing (dlc data fetch {t.name})"
        rows.append((t.name, t.kind, classes, t.metric, sizes, files))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"\ndata dir: {root} (from {origin}){'' if root.is_dir() else ' - does not exist yet'}")
    print("generated sizes are defaults: set train_size / dev_size / test_size in the data block")
    return 0


def _config_for(name: str, split: str, n: int) -> ir.DataConfig:
    from dlc.data import TASKS
    from dlc.data.files import SUFFIXES, hf_spec

    size = max(n, 0)
    sizes = {"train_size": -1, "dev_size": -1, "test_size": -1}
    if name in TASKS and TASKS[name].kind == "generated":
        sizes[f"{split}_size"] = size  # generate only what is shown
    if name in TASKS:
        return ir.DataConfig(task=name, **sizes)
    if hf_spec(name) is None and not (name.endswith(SUFFIXES) or "{split}" in name or Path(name).is_dir()):
        return ir.DataConfig(task=name)  # load_splits reports the unknown task with a did-you-mean
    return ir.DataConfig(path=name, **sizes)


def _fields(specs: list[str]) -> tuple[tuple[str, str], ...]:
    """`--field x=question --field y=context` -> (("x", "question"), ("y", "context")) (E118 when malformed)."""
    from dlc.errors import DlcUsageError

    out: list[tuple[str, str]] = []
    for spec in specs:
        name, eq, col = spec.partition("=")
        if not eq or not name.strip() or not col.strip() or name.strip() in dict(out):
            raise DlcUsageError(f"--field {spec!r}: expected INPUT=COLUMN, each input once", code="E118",
                                hint="e.g. dlc data show my.jsonl --field x=question --target-field answer")
        out.append((name.strip(), col.strip()))
    return tuple(out)


def _seed(text: str) -> int:
    """--seed: an integer in fit.seed's range (0 to 2**32 - 1), else argparse's usage error (exit 2)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= seed <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{seed} is out of range: a seed is 0 to {2**32 - 1}, as fit.seed")
    return seed


def run_show(args: argparse.Namespace) -> int:
    import dataclasses

    from dlc.data import load_splits

    cfg = _config_for(args.task, args.split, args.n)
    fields = _fields(args.field)
    if fields or args.target_field:
        cfg = dataclasses.replace(cfg, fields=fields or cfg.fields,
                                  target_field=args.target_field or cfg.target_field)
    inputs = tuple(n for n, _ in fields) or ("input",)
    splits = load_splits(cfg, inputs, seed=args.seed, data_dir=args.data_dir)
    examples = splits.split(args.split)[: max(args.n, 0)]
    if args.format == "jsonl":
        for ex in examples:
            print(json.dumps({"id": ex.id, **ex.inputs, "target": ex.target}, ensure_ascii=False))
        return 0
    info = splits.info
    print(f"task: {args.task}")
    if info is not None:
        print(f"  {info.description}")
        print(f"  metric: {info.metric}    output: {info.output}")
        if info.labels:
            verbal = ", ".join(f"{lab.name} ({' | '.join(repr(v) for v in lab.verbalizers)})" for lab in info.labels)
            print(f"  classes: {verbal}")
        print(f"  instruction: {info.instruction!r}")
    sizes = "/".join(str(len(s)) for s in (splits.train, splits.dev, splits.test))
    gen = f" (generated: {args.split} made at -n {args.n})" if info is not None and info.kind == "generated" else ""
    print(f"  train/dev/test: {sizes}{gen}")
    print(f"\nfirst {len(examples)} {args.split} example(s):")
    for ex in examples:
        print(f"\n[{ex.id}] target: {ex.target}")
        for name in inputs:
            if len(inputs) > 1:
                print(f"  {name}:")
            for line in ex.inputs[name].splitlines() or [""]:
                print(f"  | {line}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from dlc.data import fetch
    from dlc.data.store import resolve_data_dir

    root, origin = resolve_data_dir(args.data_dir)
    got = fetch(args.task, root, force=args.force, log=lambda m: print(m, file=sys.stderr))
    if not got:
        print(f"{args.task}: all files already present in {root}")
    else:
        for rel in got:
            print(root / rel)
        print(f"{args.task}: {len(got)} file(s) written to {root} (from {origin})")
    return 0

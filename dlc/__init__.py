"""dlc: a declarative graph compiler and trainer for Deep Language Networks (Sordoni et al., NeurIPS 2023).

The Python API is the CLI's own code path, without printing (README, "Python API"):

    import dlc
    graph = dlc.compile_file("graphs/quickstart.dln", {"fit.iters": "1"})   # or dlc.compile_text(text)
    outcome = dlc.fit("graphs/quickstart.dln", data_dir="data")            # FitOutcome: run_dir, result, plan
    report = dlc.evaluate([str(outcome.run_dir)], split="test")           # EvalReport: rows, summary
    rows = dlc.predict(str(outcome.run_dir), [{"x": "What is the capital of Peru?"}])

Names are imported on first use, so `import dlc` (and `dlc compile`) loads no model backend.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Mapping, Sequence

__version__ = "0.1.0"

from dlc.errors import DlcError

if TYPE_CHECKING:
    from dlc.app.evaluate import EvalReport
    from dlc.app.training import FitOutcome
    from dlc.ir import Graph

__all__ = ["DlcError", "EvalReport", "FitOutcome", "Graph", "__version__", "compile_file", "compile_text",
           "evaluate", "fit", "predict"]


def compile_file(path: str, overrides: Mapping[str, str] | None = None) -> "Graph":
    """Compile a `.dln` file (with `--set`-style overrides) into a checked graph; raises CompileFailed with every
    error of the file."""
    from dlc.lang.compiler import compile_file as _compile_file

    return _compile_file(path, dict(overrides or {}))


def compile_text(text: str, path: str = "<text>.dln", overrides: Mapping[str, str] | None = None) -> "Graph":
    """Compile `.dln` source text; `path` names it in error messages and resolves relative `file "..."` paths."""
    from dlc.lang.compiler import compile_source

    return compile_source(text, path, dict(overrides or {}))


def fit(target: str | None = None, *, overrides: Mapping[str, str] | None = None, run_dir: str | None = None,
        runs_root: str = "runs", resume: str | None = None, data_dir: str | None = None,
        cache_dir: str | None = None, no_cache: bool = False, dry_run: bool = False,
        verbose: bool = False) -> "FitOutcome":
    """`dlc fit` as a call: train a network (a `.dln` file, a compiled `.json` artifact) into a run directory.
    Quiet unless `verbose` (then the plan and results go to stdout, progress to stderr, as on the command line)."""
    from dlc.app.training import fit as _fit

    return _fit(target, overrides=dict(overrides or {}), run_dir=run_dir, runs_root=runs_root, resume=resume,
                data_dir=data_dir, cache_dir=cache_dir, no_cache=no_cache, dry_run=dry_run,
                out=sys.stdout if verbose else None, err=sys.stderr if verbose else None, progress=False)


def evaluate(targets: Sequence[str], *, split: str = "test", seeds: Sequence[int] = (), data_dir: str | None = None,
             cache_dir: str | None = None, no_cache: bool = False,
             overrides: Mapping[str, str] | None = None) -> "EvalReport":
    """`dlc eval` as a call: runs (their learned prompts and offsets) or networks on a split; mean ± 95% CI."""
    from dlc.app.evaluate import evaluate_targets

    return evaluate_targets(list(targets), split=split, seeds=tuple(seeds), data_dir=data_dir, cache_dir=cache_dir,
                            no_cache=no_cache, overrides=overrides)


def predict(target: str, rows: Sequence[Mapping[str, Any]], *, hidden: bool = False, cache_dir: str | None = None,
            no_cache: bool = False) -> list[dict[str, Any]]:
    """`dlc run` as a call: one {"id"?, "output", "layers"?} per input row (keys: the network's input names)."""
    from dlc.app.infer import predict as _predict

    return _predict(target, rows, hidden=hidden, cache_dir=cache_dir, no_cache=no_cache)


def __getattr__(name: str) -> Any:
    """The result types, importable as `dlc.FitOutcome` etc. without loading them at `import dlc`."""
    where = {"EvalReport": "dlc.app.evaluate", "FitOutcome": "dlc.app.training", "Graph": "dlc.ir"}
    if name in where:
        import importlib

        return getattr(importlib.import_module(where[name]), name)
    raise AttributeError(f"module 'dlc' has no attribute {name!r}")

"""`dlc eval` as a function: runs or networks evaluated on a split, per (target, seed), with mean ± 95% t-interval."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dlc.app.training import _evaluate, class_report, load_data
from dlc.app.models import close_lms, open_lms
from dlc.app.targets import load_network
from dlc.artifacts.rundir import RunDir
from dlc.errors import DlcUsageError
from dlc.report.stats import mean_ci


@dataclass
class EvalReport:
    split: str
    seeds: tuple[int, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)   # one per (target, seed)
    summary: dict[str, Any] = field(default_factory=dict)
    # run directory -> the settings `--set` changed from the run's own ("fit.seed: 42 -> 13")
    changed: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "seeds": list(self.seeds), "rows": self.rows, "summary": self.summary,
                **({"changed": self.changed} if self.changed else {})}


def evaluate_targets(targets: Sequence[str], *, split: str = "test", seeds: Sequence[int] = (),
                     data_dir: str | None = None, no_cache: bool = False, cache_dir: str | None = None,
                     overrides: Mapping[str, str] | None = None) -> EvalReport:
    """Evaluate runs (their learned prompts) or networks (their prompts, e.g. a `.fit.dln`) on a split.

    Each (target, seed) is one evaluation; the summary is mean ± 95% t-interval over them (paper §5 reporting).
    The seed only draws the n-shot demonstrations: with n_shots = 0 a greedy evaluation cannot depend on it, so it
    is computed once and counted for every seed (the interval then reflects the spread across targets only)."""
    if split not in ("train", "dev", "test"):
        raise DlcUsageError(f"--split {split}: expected train, dev or test", code="E113")
    if not targets:
        raise DlcUsageError("nothing to evaluate", code="E120", hint="pass a run directory or a .fit.dln file")
    rep = EvalReport(split=split, seeds=tuple(seeds))
    for t in targets:
        p = Path(t)
        run_data_dir = None
        if p.is_dir():
            run = RunDir.open(p)
            run_data_dir = run.config().data_dir
        net = load_network(t, overrides)
        graph = net.graph
        if p.is_dir() and overrides:
            rep.changed[t] = list(net.differs)
        splits = load_data(graph, data_dir or run_data_dir)
        examples = getattr(splits, split)
        if not examples:
            raise DlcUsageError(f"{t}: the {split} split is empty", code="E114",
                                hint="choose another --split, or set data.*_size")
        lms = open_lms(graph, no_cache=no_cache, cache_dir=cache_dir)
        try:
            cache: dict[int, Any] = {}
            for s in (seeds or (graph.fit.seed,)):
                key = s if graph.fit.n_shots > 0 else -1
                if key not in cache:
                    cache[key] = _evaluate(graph, graph.prompts(), lms, examples, shots_from=splits.train, seed=s)
                r = cache[key]
                cr = class_report(r, graph.layers[graph.output].output.label_names)
                rep.rows.append({"target": t, "seed": s, "accuracy": float(r.accuracy), "n": len(examples),
                                 "report": cr.to_json()})
        finally:
            close_lms(lms)
    ci = mean_ci([r["accuracy"] for r in rep.rows])
    rep.summary = {"accuracy": ci.to_json(), "text": str(ci)}
    return rep


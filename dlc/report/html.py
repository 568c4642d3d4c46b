"""`dlc report`: one self-contained static HTML page per run, or one page comparing several runs.

A run's page (written to `RUN/report.html` at the end of every fit, and on demand) shows the network drawn, each
layer's prompt before -> after with a word diff, the learning curve, every iteration's candidates with their scores,
hidden samples with their posterior weights, confusion matrices before/after, calibration offsets and the cost. The
comparison page puts runs side by side: accuracies with 95% intervals, prompts, costs, dev curves.

The run's files are read only through their readers (dlc.artifacts.rundir / records; graph.json through
dlc.app.targets.graph_of_run, which checks it against the run's config), so a missing run directory is E501 and a
damaged file E502, as for every other command. The page has no script and loads nothing (dlc.report.markup).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dlc.artifacts.records import Checkpoint, FitResult, IterationRecord, RunConfig, total_tokens
from dlc.artifacts.rundir import BACKEND, RunDir
from dlc.errors import DlcArtifactError
from dlc.fsutil import atomic_write_text
from dlc.ir import Graph
from dlc.report import sections
from dlc.report.markup import page
from dlc.report.svg import esc

REPORT = "report.html"          # the file name of a run's report inside its run directory
COMPARE = "compare.html"        # the default output of `dlc report RUN1 RUN2 ...` (current directory)

NAV = (("summary", "Summary"), ("network", "Network"), ("prompts", "Prompts"), ("curve", "Learning curve"),
       ("iterations", "Iterations"), ("hidden", "Hidden samples"), ("confusion", "Confusion"),
       ("calibration", "Calibration"), ("cost", "Cost"), ("settings", "Settings"))


@dataclass(frozen=True)
class RunView:
    """A run directory read once for a report: its typed files and what the sections derive from them."""

    run: RunDir
    config: RunConfig
    graph: Graph                                  # the graph as trained, with its initial prompts
    trace: list[IterationRecord]
    checkpoint: Checkpoint | None
    result: FitResult | None
    backend: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run.path.name

    @property
    def final_prompts(self) -> dict[str, str]:
        """The learned prompts (result.json), else the best so far (checkpoint), else the initial ones."""
        if self.result is not None:
            return dict(self.result.prompts)
        if self.checkpoint is not None and self.checkpoint.best_prompts:
            return dict(self.checkpoint.best_prompts)
        return self.graph.prompts()

    @property
    def usage(self) -> Mapping[str, Any]:
        if self.result is not None:
            return self.result.usage
        return self.checkpoint.usage if self.checkpoint is not None else {}

    @property
    def tokens(self) -> int:
        return total_tokens(self.usage)

    @property
    def done_iterations(self) -> int:
        if self.result is not None:
            return self.result.iterations
        return self.checkpoint.iteration if self.checkpoint is not None else 0

    @property
    def status(self) -> str:
        if self.result is not None:
            return "stopped early" if self.result.stopped else "finished"
        return "in progress or interrupted" if self.checkpoint is not None else "started"

    @property
    def status_detail(self) -> str:
        res = self.result
        if res is not None:
            when = f" at {res.finished_at}" if res.finished_at else ""
            return (f"training stopped after {res.iterations} iteration(s): {res.stopped}{when}" if res.stopped
                    else f"{res.iterations} training iteration(s), final evaluation done{when}")
        return (f"no final evaluation yet; `dlc fit --resume {self.run.path}` continues it"
                + (f" after iteration {self.checkpoint.iteration}" if self.checkpoint is not None else ""))


def load_run(path: str | os.PathLike[str]) -> RunView:
    """Read a run directory for a report (E501 when there is none, E502 when a file is damaged)."""
    from dlc.app.targets import graph_of_run   # the graph, checked against the run's config hash

    run = RunDir.open(path)
    cfg = run.config()
    graph = graph_of_run(run, prompts="initial")
    backend = run.read_json(BACKEND) if run.file(BACKEND).exists() else {}
    if not isinstance(backend, Mapping):
        raise DlcArtifactError(f"corrupted run directory: {run.file(BACKEND)} is not a JSON object", code="E502",
                               hint="the file was edited; start a new run with `dlc fit`")
    return RunView(run=run, config=cfg, graph=graph, trace=run.trace(), checkpoint=run.checkpoint(),
                   result=run.result(), backend=backend)


def run_page(v: RunView) -> str:
    """The HTML of one run's report."""
    c = v.config
    meta = " · ".join(esc(x) for x in (
        f"run {v.name}", f"task {c.task}" if c.task else None, f"seed {c.seed}" if c.seed is not None else None,
        f"started {c.created}" if c.created else None, f"dlc {c.dlc_version}" if c.dlc_version else None) if x)
    body = [sections.summary(v), sections.network(v), sections.prompts(v), sections.curve(v),
            sections.iterations(v), sections.hidden(v), sections.confusion(v), sections.calibration(v),
            sections.cost(v), sections.settings(v)]
    return page(f"dlc report — {c.net}", meta, NAV, body)


def compare_page(views: Sequence[RunView]) -> str:
    from dlc.report import compare

    return compare.page_of(views)


def write_report(runs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of one run (default RUN/report.html) or the comparison of several (default ./compare.html);
    an existing directory as `output` gets the default file name inside it. Returns the file written."""
    views = [load_run(r) for r in runs]
    html = run_page(views[0]) if len(views) == 1 else compare_page(views)
    if output is None:
        out = views[0].run.path / REPORT if len(views) == 1 else Path(COMPARE)
    else:
        out = Path(output)
        if out.is_dir():
            out = out / (REPORT if len(views) == 1 else COMPARE)
    try:
        atomic_write_text(out, html)
    except OSError as e:
        raise DlcArtifactError(f"cannot write the report {out}: {e.strerror or e}", code="E512",
                               hint="choose another path with -o FILE") from None
    return out


__all__ = ["COMPARE", "REPORT", "RunView", "compare_page", "load_run", "run_page", "write_report"]

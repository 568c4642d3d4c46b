"""`dlc runs` as a function: one summary per run directory under a root."""
from __future__ import annotations

from typing import Any

from dlc.artifacts.rundir import iter_runs
from dlc.report.stats import run_summary


def list_runs(root: str = "runs") -> list[dict[str, Any]]:
    return [run_summary(r) for r in iter_runs(root)]

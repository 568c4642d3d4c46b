"""The application layer: what each product command does, as plain Python functions with typed results.

`dlc/commands/*` parse arguments and print; everything else lives here, so every command is also a Python call
(dbt's `dbtRunner().invoke` idea) and tests drive the same code without a shell. Names are imported on first use,
so `dlc compile` / `dlc show` (which need only `dlc.app.targets`) never load a model backend.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "EvalReport": "evaluate", "evaluate_targets": "evaluate",
    "FitOutcome": "training", "fit": "training", "load_data": "training",
    "run_inference": "infer", "predict": "infer",
    "close_lms": "models", "open_lms": "models", "usage_totals": "models",
    "list_runs": "runs",
    "Network": "targets", "graph_of_run": "targets", "load_network": "targets", "parse_seeds": "targets",
    "parse_sets": "targets", "with_prompts": "targets",
}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from dlc.app.evaluate import EvalReport, evaluate_targets
    from dlc.app.training import FitOutcome, fit, load_data
    from dlc.app.infer import predict, run_inference
    from dlc.app.models import close_lms, open_lms, usage_totals
    from dlc.app.runs import list_runs
    from dlc.app.targets import Network, graph_of_run, load_network, parse_seeds, parse_sets, with_prompts


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"dlc.app.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dlc.app' has no attribute {name!r}")

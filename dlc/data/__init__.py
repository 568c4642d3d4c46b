"""Datasets: the paper's tasks with their exact reference splits, generated tasks, and custom files.

    from dlc.data import TASKS, load_splits, data_dir
    splits = load_splits(graph.data, graph.inputs, seed=graph.fit.seed)

See shared/data/README.md for the split rules reproduced here and `dlc data list` for the tasks.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dlc.data.fetch import fetch
from dlc.data.store import ENV_DATA_DIR, data_dir, default_data_dir
from dlc.data.tasks import GENERATED_TASKS, PAPER_TASKS, TASKS, TaskInfo

# The loaders and split arithmetic import numpy; they load on first use, so the compiler (which reads only the task
# table) and `dlc compile` / `dlc show` do not pay for them.
_LAZY = {"Splits": "loader", "align_targets": "loader", "load_splits": "loader", "load_task": "loader",
         "RawSplits": "splits", "balanced_cut": "splits", "fingerprint": "splits"}

if TYPE_CHECKING:
    from dlc.data.loader import Splits, align_targets, load_splits, load_task
    from dlc.data.splits import RawSplits, balanced_cut, fingerprint


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"dlc.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dlc.data' has no attribute {name!r}")


__all__ = ["TASKS", "TaskInfo", "PAPER_TASKS", "GENERATED_TASKS", "Splits", "RawSplits", "load_splits",
           "load_task", "align_targets", "data_dir", "default_data_dir", "ENV_DATA_DIR", "fingerprint", "balanced_cut", "fetch"]

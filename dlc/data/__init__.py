"""Datasets: the paper's tasks with their exact reference splits, generated tasks, and custom files.

    from dlc.data import TASKS, load_splits, data_dir
    splits = load_splits(graph.data, graph.inputs, seed=graph.fit.seed)

See shared/data/README.md for the split rules reproduced here and `dlc data list` for the tasks.
"""
from __future__ import annotations

from dlc.data.fetch import fetch
from dlc.data.loader import Splits, align_targets, load_splits, load_task
from dlc.data.splits import RawSplits, balanced_cut, fingerprint
from dlc.data.store import ENV_DATA_DIR, data_dir, default_data_dir
from dlc.data.tasks import GENERATED_TASKS, PAPER_TASKS, TASKS, TaskInfo

__all__ = ["TASKS", "TaskInfo", "PAPER_TASKS", "GENERATED_TASKS", "Splits", "RawSplits", "load_splits",
           "load_task", "align_targets", "data_dir", "default_data_dir", "ENV_DATA_DIR", "fingerprint", "balanced_cut", "fetch"]

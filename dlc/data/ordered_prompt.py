"""Ordered-Prompt tasks (mpqa, trec, subj): README step 3.

The class names are appended to every sentence as an options list; one local `RandomState(42)` draws 1000 train
rows, dev is the whole `dev_subsample.jsonl`, and 250 test rows are drawn with the *same* generator after train.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dlc.data.splits import RawSplits, Record
from dlc.data.store import read_jsonl, require_files
from dlc.data.tasks import TASKS


def _records(task: str, path: Path) -> list[Record]:
    info = TASKS[task]
    options = "\n".join("- " + name for name in info.label_names)
    out: list[Record] = []
    for row in read_jsonl(path):
        raw = str(row["label"])
        out.append({"input": f"{row['sentence']}\nOptions:\n{options}", "label": info.canonical(raw),
                    "raw_label": raw, "sentence": str(row["sentence"])})
    return out


def load(task: str, root: Path) -> RawSplits:
    info = TASKS[task]
    require_files(task, root, info.files)
    train_all, dev, test_all = (_records(task, root / f) for f in info.files)
    rng = np.random.RandomState(42)
    train = [train_all[i] for i in rng.choice(len(train_all), 1000, replace=False)]
    test = [test_all[i] for i in rng.choice(len(test_all), 250, replace=False)]
    return RawSplits(train, dev, test, fields=("input", "label", "raw_label", "sentence"))

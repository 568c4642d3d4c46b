"""Leopard tasks (disaster, airline): README step 4.

A question prefix and the options list are added to each tweet; one `RandomState(42).choice(N, 1500)` draw is cut
into 1000 train / 250 dev / 250 test. Raw labels ("Relevant", "Not Relevant") map to canonical names (yes/no).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dlc.data.splits import RawSplits, Record
from dlc.data.store import read_json, require_files
from dlc.data.tasks import TASKS

PREFIXES = {
    "disaster": "Is the following tweet relevant to a disaster? ",
    "airline": "Is the following tweet positive, negative, or neutral? ",
}


def load(task: str, root: Path) -> RawSplits:
    info = TASKS[task]
    require_files(task, root, info.files)
    options = "\n".join("- " + name for name in info.label_names)
    rows: list[Record] = []
    for row in read_json(root / info.files[0]):
        raw = str(row["label"])
        rows.append({"input": f"{PREFIXES[task]}{row['sentence1']}\nOptions:\n{options}",
                     "label": info.canonical(raw), "raw_label": raw, "sentence": str(row["sentence1"])})
    idx = np.random.RandomState(42).choice(len(rows), 1500, replace=False)
    pick = lambda ids: [rows[i] for i in ids]  # noqa: E731
    return RawSplits(pick(idx[:1000]), pick(idx[1000:1250]), pick(idx[1250:1500]),
                     fields=("input", "label", "raw_label", "sentence"))

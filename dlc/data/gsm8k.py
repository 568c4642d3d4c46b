"""GSM8K: README step 5.

The reference loads it with Hugging Face `load_dataset("gsm8k", "main").shuffle(seed=42)`, i.e. each split permuted
by a fresh `numpy.random.default_rng(42)`; train is the first half of shuffled train, dev the second half, test all of
shuffled test. The target is the final answer after "#### ".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dlc.data.splits import RawSplits, Record
from dlc.data.store import read_jsonl, require_files
from dlc.data.tasks import TASKS
from dlc.errors import DlcDataError


def _records(path: Path) -> list[Record]:
    out: list[Record] = []
    for i, row in enumerate(read_jsonl(path), 1):
        answer = str(row["answer"])
        if "#### " not in answer:
            raise DlcDataError(f"{path}: row {i} has no '#### <answer>' line", code="E816",
                               hint="the file is not GSM8K's; run `dlc data fetch gsm8k` again")
        final = answer.split("#### ", 1)[1]
        out.append({"input": str(row["question"]), "label": final, "raw_label": final,
                    "question": str(row["question"]), "answer": answer})
    return out


def _hf_shuffle(rows: list[Record]) -> list[Record]:
    perm = np.random.default_rng(42).permutation(len(rows))
    return [rows[i] for i in perm]


def load(task: str, root: Path) -> RawSplits:
    info = TASKS[task]
    require_files(task, root, info.files)
    train_all = _hf_shuffle(_records(root / info.files[0]))
    test = _hf_shuffle(_records(root / info.files[1]))
    half = len(train_all) // 2
    return RawSplits(train_all[:half], train_all[half:], test,
                     fields=("input", "label", "raw_label", "question", "answer"))

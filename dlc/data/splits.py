"""Split containers, the README's fingerprint, and the size cuts applied after loading.

Split randomness follows the reference exactly (numpy's legacy `RandomState`, a *local* generator seeded 42, so the
splits do not depend on the run seed; shared/data/README.md). Training-batch sampling is the engine's job (dlc.rng).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

Record = dict[str, str]
"""One example as loaded: `input` (the formatted text), `label` (canonical target), `raw_label`, plus extra fields."""

SplitName = Literal["train", "dev", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "dev", "test")


@dataclass(frozen=True)
class RawSplits:
    """A task's three splits as loaded, before any size cut; records keep their position as `_pos`."""

    train: list[Record]
    dev: list[Record]
    test: list[Record]
    fields: tuple[str, ...] = field(default=())   # user-visible field names, in a stable order

    def split(self, name: str) -> list[Record]:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]


def fingerprint(xs: Sequence[str]) -> str:
    """`md5("\\x1e".join(xs))[:12]`: the split fingerprint of shared/data/README.md."""
    return hashlib.md5("\x1e".join(xs).encode("utf-8")).hexdigest()[:12]


def balanced_cut(labels: Sequence[str], max_size: int, rng: np.random.RandomState) -> list[int]:
    """The reference's class-balanced `max_*_size` cut: indices into `labels`.

    Classes are keyed in order of first appearance; a random class order is drawn once, then one index is drawn
    *with replacement* from each class in turn until `max_size` indices are picked. Duplicates therefore occur,
    and a split smaller than `max_size` is up-sampled — this is the reference's behaviour, kept for exactness.
    """
    per_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        per_class.setdefault(lab, []).append(i)
    if not per_class or max_size <= 0:
        return []
    keys = list(per_class)
    pick_order = rng.choice(keys, len(keys), replace=False)
    out: list[int] = []
    i = 0
    while len(out) < max_size:
        out += rng.choice(per_class[str(pick_order[i % len(pick_order)])], 1).tolist()
        i += 1
    return out

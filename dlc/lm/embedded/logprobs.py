"""Log-probability arithmetic on llama.cpp logits rows, shared by scoring and generation (log p of given tokens,
paper Eq. 2-3): log-sum-exp and one token's log-prob in float64, the top-k of a row, and the common prefix of two
token lists (what prefix sharing skips)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _logsumexp(row: np.ndarray) -> float:
    a = np.asarray(row, dtype=np.float64)
    m = float(a.max())
    return m + float(np.log(np.exp(a - m).sum()))


def _logprob(row: np.ndarray, target: int) -> float:
    a = row.astype(np.float64)
    return float(a[target] - _logsumexp(a))


def _top_logprobs(row: np.ndarray, k: int, lse: float) -> list[tuple[int, float]]:
    """The k most likely tokens of a logits row (float64) whose log-sum-exp is `lse`: [(token, log-prob)], most
    likely first (ties: lower id first)."""
    k = min(int(k), len(row))
    if k <= 0:
        return []
    ids = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
    ids = ids[np.lexsort((ids, -row[ids]))]
    return [(int(t), float(row[t] - lse)) for t in ids]

"""dlc.lm.embedded.logprobs: the arithmetic every score and sample reads from a logits row."""
from __future__ import annotations

import math

import numpy as np

from dlc.lm.embedded.logprobs import _lcp, _logprob, _logsumexp, _top_logprobs


def test_logsumexp_and_logprob_stay_finite_on_large_logits():
    row = np.array([1000.0, 1000.0, 990.0], dtype=np.float32)
    lse = _logsumexp(row)
    assert math.isclose(lse, 1000.0 + math.log(2 + math.exp(-10)), rel_tol=0, abs_tol=1e-12)  # exp(1000) overflows
    assert math.isclose(_logprob(row, 2), -10.0 - math.log(2 + math.exp(-10)), rel_tol=0, abs_tol=1e-12)
    assert math.isclose(sum(math.exp(_logprob(row, t)) for t in range(3)), 1.0)


def test_top_logprobs_are_the_most_likely_first_with_ties_by_lower_id():
    row = np.array([0.0, 2.0, 1.0, 2.0, -1.0])
    lse = _logsumexp(row)
    top = _top_logprobs(row, 3, lse)
    assert [t for t, _ in top] == [1, 3, 2]
    assert all(math.isclose(v, row[t] - lse) for t, v in top)
    assert [t for t, _ in _top_logprobs(row, 99, lse)] == [1, 3, 2, 0, 4]    # k beyond the vocabulary: all of it
    assert _top_logprobs(row, 0, lse) == []


def test_common_prefix_length():
    assert _lcp([1, 2, 3], [1, 2, 4, 5]) == 2
    assert _lcp([], [1]) == 0 and _lcp([7, 8], [7, 8]) == 2

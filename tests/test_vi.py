"""Each equation of dlc.engine.vi against hand-computed numbers."""
from __future__ import annotations

import math

import pytest

from dlc.engine import vi


def test_logsumexp_and_softmax():
    assert vi.logsumexp([0.0, math.log(3)]) == pytest.approx(math.log(4))
    assert vi.logsumexp([]) == float("-inf")
    assert vi.logsumexp([float("-inf"), float("-inf")]) == float("-inf")
    assert vi.logsumexp([1000.0, 1000.0]) == pytest.approx(1000 + math.log(2))   # stable
    assert vi.softmax([0.0, math.log(3)]) == pytest.approx([0.25, 0.75])
    assert vi.log_softmax([float("-inf")] * 2) == pytest.approx([math.log(0.5)] * 2)


def test_reductions_and_verbalizer_aggregation():
    assert vi.reduce_logprobs([-1.0, -2.0, -3.0], "sum") == -6.0
    assert vi.reduce_logprobs([-1.0, -2.0, -3.0], "mean") == -2.0
    with pytest.raises(ValueError):
        vi.reduce_logprobs([-1.0], "median")
    # an empty text (no token) is excluded, not certain: a mean over zero tokens used to say log p = 0
    assert vi.reduce_logprobs([], "mean") == float("-inf") and vi.reduce_logprobs((), "sum") == float("-inf")
    with pytest.raises(ValueError):
        vi.reduce_logprobs([], "median")
    assert vi.aggregate_verbalizers([math.log(0.2), math.log(0.3)], "logsumexp") == pytest.approx(math.log(0.5))
    assert vi.aggregate_verbalizers([math.log(0.2), math.log(0.3)], "max") == pytest.approx(math.log(0.3))


def test_posterior_logits_every_term():
    # logit = child + prior - log q - mi
    got = vi.posterior_logits([-1.0, -2.0], logp_prior=[-0.5, -0.1], logq=[-1.0, -3.0], logp_mi=[-0.2, -0.4])
    assert got == pytest.approx([-0.3, 1.3])
    assert vi.posterior_logits([-1.0, -2.0]) == [-1.0, -2.0]
    assert vi.posterior_logits([-1.0], logp_prior=[-2.0]) == [-3.0]


def test_importance_weights_temperature_and_uniform():
    assert vi.importance_weights([0.0, math.log(3)]) == pytest.approx([0.25, 0.75])
    s3 = math.sqrt(3)
    assert vi.importance_weights([0.0, math.log(3)], 2.0) == pytest.approx([1 / (1 + s3), s3 / (1 + s3)])
    assert vi.importance_weights([0.0, 5.0], 100.0) == [0.5, 0.5]      # >= 100: uniform
    assert vi.importance_weights([-7.0]) == [1.0]
    assert vi.importance_weights([float("-inf")] * 2) == [0.5, 0.5]   # no information
    with pytest.raises(ValueError):
        vi.importance_weights([0.0, 1.0], 0.0)


def test_elbo_score_ragged():
    # (1/B) sum_i sum_k w_ik S_ik = ((0.25*-2 + 0.75*-4) + 1*-1) / 2
    assert vi.elbo_score([[0.25, 0.75], [1.0]], [[-2.0, -4.0], [-1.0]]) == pytest.approx(-2.25)
    assert vi.elbo_score([], []) == 0.0


def test_trust_region_kl():
    p = [math.log(0.5), math.log(0.5)]
    q = [math.log(0.9), math.log(0.1)]
    kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert vi.categorical_kl(p, q) == pytest.approx(kl) == pytest.approx(0.5108256)
    assert vi.categorical_kl(p, p) == 0.0
    assert vi.trust_region_kl([p, p], [p, q]) == pytest.approx(kl / 2)


def test_exploration_penalty_and_decay():
    # (1/B) sum over wrong examples of log p(h_hat | x, pi)
    assert vi.exploration_penalty([-1.0, -2.0, -3.0, -4.0], [True, False, True, False]) == pytest.approx(-1.0)
    assert vi.decayed_penalty(0.5, 5, 20, True) == pytest.approx(0.375)
    assert vi.decayed_penalty(0.5, 5, 20, False) == 0.5
    assert vi.decayed_penalty(0.5, 20, 20, True) == 0.0


def test_nce_argmax_entropy():
    assert vi.nce_scores([0.0, math.log(3)]) == pytest.approx([math.log(0.25), math.log(0.75)])
    assert vi.argmax([1.0, 3.0, 3.0]) == 1            # ties go to the first
    assert vi.argmax([2.0, 2.0]) == 0
    assert vi.normalized_entropy([0.5, 0.5]) == pytest.approx(1.0)
    assert vi.normalized_entropy([1.0, 0.0]) == pytest.approx(0.0)

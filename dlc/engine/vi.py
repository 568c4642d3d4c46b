"""Pure math of variational prompt training (Sordoni et al. 2023, §3 and App. E): no LLM, no I/O.

Every function takes plain floats/lists so that each equation is testable against hand-computed numbers:
- Eq. 2-3: the ELBO splits into one weighted log-likelihood per layer, `elbo_score`.
- §3 "posterior sharpening": importance logits and self-normalised weights, `posterior_logits`, `importance_weights`.
- §4 trust region on the output layer: `categorical_kl`, `trust_region_kl`.
- §4 exploration reward on hidden layers: `exploration_penalty`, `decayed_penalty`.
- `use_nce`: each candidate prompt must rank the K samples against one another, `nce_scores`.
"""
from __future__ import annotations

import math
from typing import Sequence

NEG_INF = float("-inf")


def logsumexp(xs: Sequence[float]) -> float:
    """log Σ exp(x), stable; -inf for an empty or all -inf input."""
    if not xs:
        return NEG_INF
    m = max(xs)
    if m == NEG_INF:
        return NEG_INF
    if m == math.inf:
        return math.inf
    return m + math.log(math.fsum(math.exp(x - m) for x in xs))


def log_softmax(xs: Sequence[float]) -> list[float]:
    """Normalise log-scores into log-probabilities (class-normalised label distribution, NCE)."""
    z = logsumexp(xs)
    if z == NEG_INF:  # nothing has mass: a uniform distribution is the only neutral answer
        return [-math.log(len(xs))] * len(xs) if xs else []
    return [x - z for x in xs]


def softmax(xs: Sequence[float]) -> list[float]:
    return [math.exp(v) for v in log_softmax(xs)]


def reduce_logprobs(logprobs: Sequence[float], reduction: str) -> float:
    """Sequence log-probability from per-token log-probs: "sum" (a true log-likelihood) or "mean" (per token, the
    paper's length normalisation for hidden texts, so long and short h are comparable).

    No token (an empty text) gives -inf under both: the text's real log-probability, log p(end-of-text | ·), is not
    among the scores, and 0 (the sum, or a mean over zero tokens) would make the empty text the most likely of all.
    -inf excludes it; the engine does not even score empty texts (forward.is_empty_text)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"unknown log-prob reduction {reduction!r}")
    if not logprobs:
        return NEG_INF
    if reduction == "sum":
        return math.fsum(logprobs)
    if reduction == "mean":
        return math.fsum(logprobs) / max(1, len(logprobs))
    raise ValueError(f"unknown log-prob reduction {reduction!r}")


def aggregate_verbalizers(logps: Sequence[float], agg: str) -> float:
    """Per-label log-score from its verbalizers' continuation log-probs: "logsumexp" (probability mass of the label,
    the reference's agg="sum") or "max" (its most likely spelling)."""
    if agg == "logsumexp":
        return logsumexp(logps)
    if agg == "max":
        return max(logps) if logps else NEG_INF
    raise ValueError(f"unknown verbalizer aggregation {agg!r}")


def posterior_logits(logp_children: Sequence[float], *, logp_prior: Sequence[float] | None = None,
                     logq: Sequence[float] | None = None, logp_mi: Sequence[float] | None = None) -> list[float]:
    """Sharpened posterior logits of K proposals h_k of one example (dln-reference §1.4 step 4):

        logit_k = Σ_children log p(target_child | h_k, ..)  [+ log p(h_k | parents, π)]  [- log q(h_k)]  [- log p(y | h_k)]

    Each optional term is present iff its list is given (include_prior, correct_weighting, mi_regularization)."""
    out = []
    for k, c in enumerate(logp_children):
        v = c
        if logp_prior is not None:
            v += logp_prior[k]
        if logq is not None:
            v -= logq[k]
        if logp_mi is not None:
            v -= logp_mi[k]
        out.append(v)
    return out


def importance_weights(logits: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Self-normalised weights w_k = softmax_k(logit_k / T) over the K samples of one example (paper Eq. 3, with the
    sharpening exponent α = 1/T). T >= 100 (or K == 1) gives uniform weights, as in the reference."""
    k = len(logits)
    if k == 0:
        return []
    if temperature >= 100 or k == 1:
        return [1.0 / k] * k
    if temperature <= 0:
        raise ValueError("posterior temperature must be > 0")
    finite = [x for x in logits if not math.isnan(x)]
    if not finite or max(finite) == NEG_INF:
        return [1.0 / k] * k  # no information: every sample equally plausible
    return softmax([(x if not math.isnan(x) else NEG_INF) / temperature for x in logits])


def argmax(xs: Sequence[float]) -> int:
    """Index of the largest value; ties go to the first index (so the current prompt wins ties)."""
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def elbo_score(weights: Sequence[Sequence[float]], scores: Sequence[Sequence[float]]) -> float:
    """Per-candidate ELBO (paper Eq. 3): (1/B) Σ_i Σ_k w_ik · S_ik, with S_ik the candidate's log-likelihood of the
    k-th (input, target) configuration of example i. Ragged rows are allowed (rewrite_loss_only, use_h_argmax)."""
    b = len(scores)
    if b == 0:
        return 0.0
    total = math.fsum(w * s for ws, ss in zip(weights, scores, strict=True) for w, s in zip(ws, ss, strict=True)
                      if w != 0.0)
    return total / b


def nce_scores(scores: Sequence[float]) -> list[float]:
    """use_nce: replace S_ik by log softmax_k S_ik, so a prompt is rewarded for ranking the good samples above the
    others rather than for making every sample likely."""
    return log_softmax(scores)


def categorical_kl(logp: Sequence[float], logq: Sequence[float]) -> float:
    """KL(p ‖ q) = Σ_c p_c (log p_c − log q_c) for two label log-distributions."""
    total = 0.0
    for lp, lq in zip(logp, logq, strict=True):
        p = math.exp(lp)
        if p == 0.0:
            continue
        total += p * (lp - lq)
    return total


def trust_region_kl(reference: Sequence[Sequence[float]], candidate: Sequence[Sequence[float]]) -> float:
    """Trust region (paper §4): (1/B) Σ_i KL(p(·|ĥ_i, π_current) ‖ p(·|ĥ_i, π_n)) over the output label
    distributions of the forward inputs; subtracted (× trust_factor) from the output layer's ELBO."""
    if not reference:
        return 0.0
    return math.fsum(categorical_kl(p, q) for p, q in zip(reference, candidate, strict=True)) / len(reference)


def exploration_penalty(logp_forward: Sequence[float], wrong: Sequence[bool]) -> float:
    """Exploration reward term (paper §4): (1/B) Σ_{i: loss_i > 0} log p(ĥ_i | x_i, π_n). Subtracting λ times it
    favours hidden prompts that make the *wrong* forward hidden states unlikely."""
    b = len(logp_forward)
    if b == 0:
        return 0.0
    return math.fsum(lp for lp, w in zip(logp_forward, wrong, strict=True) if w) / b


def decayed_penalty(lam: float, iteration: int, iters: int, decay: bool) -> float:
    """λ_t = λ·(1 − t/iters) when decaying linearly to 0 over training (the reference's vi_main), else λ."""
    if not decay or iters <= 0:
        return lam
    return lam * max(0.0, 1.0 - iteration / iters)


def normalized_entropy(weights: Sequence[float]) -> float:
    """Entropy of the weights divided by log K (1: uniform, 0: one sample has all the mass); logged, not optimised."""
    k = len(weights)
    if k <= 1:
        return 0.0
    h = -math.fsum(w * math.log(w) for w in weights if w > 0)
    return h / math.log(k)

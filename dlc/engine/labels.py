"""Label distributions by exact continuation scoring (never from truncated top-k lists, dln-reference §3.2, §6.2.12).

For a choice layer, every verbalizer of every label is scored as a continuation of the layer's prompt; a label's
log-score aggregates its verbalizers (logsumexp = probability mass, or max), and the label scores are normalised
over the label set: log p̃(label | context).
"""
from __future__ import annotations

from typing import Sequence

from dlc.ir import Label
from dlc.lm.base import LM, Prompt, ScoreRequest, ScoreResult
from dlc.engine.vi import aggregate_verbalizers, log_softmax, reduce_logprobs


def verbalizers(label: Label) -> tuple[str, ...]:
    return label.verbalizers or (label.name,)


def label_requests(prompt: Prompt, labels: Sequence[Label], tag: str = "") -> list[ScoreRequest]:
    """One ScoreRequest per verbalizer, labels in order, verbalizers in order."""
    return [ScoreRequest(prompt=prompt, continuation=v, tag=tag) for lab in labels for v in verbalizers(lab)]


def label_logdist_from(results: Sequence[ScoreResult], labels: Sequence[Label], *, agg: str = "logsumexp",
                       reduction: str = "sum") -> list[float]:
    """Class-normalised log-distribution from the results of `label_requests` (same order)."""
    scores = []
    pos = 0
    for lab in labels:
        n = len(verbalizers(lab))
        scores.append(aggregate_verbalizers([reduce_logprobs(r.logprobs, reduction) for r in results[pos:pos + n]],
                                            agg))
        pos += n
    assert pos == len(results), "label results do not match the label set"
    return log_softmax(scores)


def label_logdists(lm: LM, prompts: Sequence[Prompt], labels: Sequence[Label], *, agg: str = "logsumexp",
                   reduction: str = "sum", tag: str = "") -> list[list[float]]:
    """Label log-distributions of many prompts, in one batched `score` call."""
    reqs = [r for p in prompts for r in label_requests(p, labels, tag)]
    results = lm.score(reqs) if reqs else []
    per = len(reqs) // max(1, len(prompts))
    return [label_logdist_from(results[i * per:(i + 1) * per], labels, agg=agg, reduction=reduction)
            for i in range(len(prompts))]

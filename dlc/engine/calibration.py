"""Calibrated choice layers: a learned per-label log-offset b (beyond the paper).

A choice layer's label distribution is p_LM(label | context), normalised over the label set (engine/labels.py). A
small model's dominant error is a skewed label prior (../docs: trec 0.52 → 0.75 with an offset), so a calibrated
layer outputs

    p_b(label | context) = softmax(log p_LM(label | context) + b)_label        (vector scaling without the scale,
                                                                              Guo et al. 2017, §4.2)

b is fitted by maximum a posteriori on labelled label distributions (the engine already computes them):

    b* = argmax_b  Σ_i w_i · log softmax(ℓ_i + b)[y_i]  −  ||b||² / (2σ²)

with ℓ_i the raw log-distribution of example i, y_i its target label, w_i ≥ 0 its weight (1, or a posterior
weight) and σ (`fit.calibration_sigma`, default 1) the prior's standard deviation: a Gaussian prior N(0, σ²) on each
offset shrinks b towards 0, so 8 examples of one class move b by about a nat, not to ±∞, while a few hundred
examples let the data decide. The objective is strictly concave (log-likelihood of a softmax is concave in b; the
prior is strongly concave), so Newton's method with backtracking converges to the unique maximiser; the prior also
fixes the gauge (adding c·1 to b changes no probability; the penalty picks Σ b = 0).

`calibration = batch` estimates the same b without labels (batch calibration, Zhou et al., "Batch Calibration",
ICLR 2024: the contextual bias is the mean label distribution over a batch of inputs, and it is divided out):

    b_BC = −log( Σ_i w_i · p_LM(label | x_i) / Σ_i w_i ),  centred

It removes the model's average preference among the labels, i.e. it assumes the labels equally likely. Why offer it:
the MAP fit learns the training data's label prior along with the model's bias, which costs accuracy when the test
data is drawn with another prior (the BBH tasks, whose train/dev come from the BIG-bench pool: date −6 points);
batch calibration cannot learn a prior, so it cannot learn a wrong one, and it costs accuracy where the true prior
is skewed (airline, disaster). bench/BATCH_CALIBRATION.md has both on the nine tasks.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from dlc.ir import Layer


def apply_offsets(logdist: Sequence[float], offsets: Sequence[float] | None) -> list[float]:
    """log softmax(ℓ + b): the calibrated label log-distribution (ℓ itself when b is None or empty)."""
    if offsets is None or len(offsets) == 0:
        return list(logdist)
    z = np.asarray(logdist, dtype=float) + np.asarray(offsets, dtype=float)
    m = float(np.max(z))
    return list(z - (m + math.log(float(np.sum(np.exp(z - m))))))


def map_objective(logdists: Sequence[Sequence[float]], targets: Sequence[int], b: Sequence[float], sigma: float,
                  weights: Sequence[float] | None = None) -> float:
    """The MAP objective above (for tests and diagnostics)."""
    w = [1.0] * len(targets) if weights is None else list(weights)
    ll = sum(wi * apply_offsets(l, b)[y] for l, y, wi in zip(logdists, targets, w))
    return ll - float(np.dot(b, b)) / (2 * sigma * sigma)


def fit_offsets(logdists: Sequence[Sequence[float]], targets: Sequence[int], *, sigma: float = 1.0,
                weights: Sequence[float] | None = None, iters: int = 50, tol: float = 1e-10) -> list[float]:
    """b* of the MAP objective by damped Newton steps. `targets[i]` indexes the label of example i.

    With no examples (or all weights 0) the answer is the prior's mode, b = 0."""
    if sigma <= 0:
        raise ValueError("sigma must be > 0")
    L = np.asarray(logdists, dtype=float)
    if L.size == 0:
        return []
    n, k = L.shape
    y = np.zeros((n, k))
    y[np.arange(n), np.asarray(targets, dtype=int)] = 1.0
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    lam = 1.0 / (sigma * sigma)

    def objective(b: np.ndarray) -> float:
        z = L + b
        m = z.max(axis=1, keepdims=True)
        logp = z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))
        return float((w[:, None] * y * logp).sum() - 0.5 * lam * b @ b)

    b = np.zeros(k)
    f = objective(b)
    for _ in range(iters):
        z = L + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (w[:, None] * (y - p)).sum(axis=0) - lam * b
        hess = np.einsum("i,ij,ik->jk", w, p, p) - np.diag((w[:, None] * p).sum(axis=0)) - lam * np.eye(k)
        step = np.linalg.solve(hess, -grad)
        t = 1.0
        while True:                       # backtracking: the objective must not decrease
            cand = b + t * step
            fc = objective(cand)
            if fc >= f - 1e-12 or t < 1e-8:
                break
            t *= 0.5
        done = abs(fc - f) < tol
        b, f = cand, fc
        if done:
            break
    b -= b.mean()                          # exact gauge (the optimum already has Σ b ≈ 0)
    return [float(x) for x in b]


def batch_offsets(logdists: Sequence[Sequence[float]], weights: Sequence[float] | None = None) -> list[float]:
    """b_BC of the module docstring: minus the log of the (weighted) mean label distribution, centred (Σ b = 0).

    Labels are not used. With no examples (or all weights 0) the answer is b = 0, like `fit_offsets`."""
    L = np.asarray(logdists, dtype=float)
    if L.size == 0:
        return []
    w = np.ones(L.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    if float(w.sum()) <= 0:
        return [0.0] * L.shape[1]
    P = np.exp(L - L.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    mean = (w[:, None] * P).sum(axis=0) / float(w.sum())
    b = -np.log(np.maximum(mean, 1e-300))
    b -= b.mean()
    return [float(x) for x in b]


def estimate_offsets(kind: str, logdists: Sequence[Sequence[float]], targets: Sequence[int], *, sigma: float = 1.0,
                     weights: Sequence[float] | None = None) -> list[float]:
    """The offsets of a calibrated layer with `calibration = kind`: "fit" (MAP, labelled) or "batch" (unlabelled)."""
    if kind == "batch":
        return batch_offsets(logdists, weights)
    if kind == "fit":
        return fit_offsets(logdists, targets, sigma=sigma, weights=weights)
    raise ValueError(f"no offsets estimator for calibration = {kind!r}")


def calibrated(layer: Layer) -> bool:
    """Does the layer learn calibration offsets (a choice layer with calibration = fit or batch)?"""
    return layer.calibration in ("fit", "batch") and layer.output.kind == "choice"


def calibrated_accuracy(logdists: Sequence[Sequence[float]], targets: Sequence[int],
                        offsets: Sequence[float] | None) -> float:
    """Share of examples whose calibrated argmax is the target."""
    if not targets:
        return 0.0
    ok = 0
    for l, y in zip(logdists, targets):
        d = apply_offsets(l, offsets)
        ok += int(max(range(len(d)), key=lambda j: (d[j], -j)) == y)
    return ok / len(targets)

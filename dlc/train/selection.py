"""Selection that does not chase noise: when does a new parameter set (prompts + offsets) replace the best one?

Validation scores are per dev example: 0/1 correctness (`validation = accuracy`) or log p(target | x)
(`validation = loglik`, continuous, so a 20-example dev set ranks candidates far more reliably than its accuracy).

`accept = best` is the paper's rule: a strictly higher mean wins. `accept = paired` compares the two sets on the
*same* dev examples: with d_i = s_new,i − s_best,i, the new set wins only when the one-sided paired t-test rejects
"no improvement" at level α (`accept_level`): t = mean(d) / (sd(d)/√n) > t_{1−α, n−1}. A constant non-zero
difference (sd = 0) is decided by its sign. Bench/NOTES.md saw dev rise and test fall on hyperbaton and date with
the paper's rule; the paired rule keeps the initial prompts unless the evidence is there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("df must be >= 1")
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return tail if t >= 0 else 1.0 - tail


@dataclass(frozen=True)
class Comparison:
    """The evidence behind one acceptance decision (recorded in the trace)."""

    accepted: bool
    rule: str
    n: int
    mean_new: float
    mean_best: float
    mean_diff: float
    t: float | None = None
    p: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rule": self.rule, "n": self.n, "mean_new": self.mean_new,
                "mean_best": self.mean_best, "mean_diff": self.mean_diff, "t": self.t, "p": self.p}


def compare(new: Sequence[float], best: Sequence[float], *, rule: str = "best", level: float = 0.1) -> Comparison:
    """Should `new` replace `best`? Both are per-example scores on the same examples, in the same order."""
    if len(new) != len(best):
        raise ValueError("paired scores must cover the same examples")
    n = len(new)
    mn = math.fsum(new) / n if n else 0.0
    mb = math.fsum(best) / n if n else 0.0
    diff = mn - mb
    if rule == "best" or n == 0:
        return Comparison(diff > 0, "best", n, mn, mb, diff)
    d = [a - b for a, b in zip(new, best)]
    if n < 2:
        return Comparison(diff > 0, rule, n, mn, mb, diff)
    var = math.fsum((x - diff) ** 2 for x in d) / (n - 1)
    if var <= 1e-24:
        return Comparison(diff > 0, rule, n, mn, mb, diff, None, 0.0 if diff > 0 else 1.0)
    t = diff / math.sqrt(var / n)
    p = t_sf(t, n - 1)
    return Comparison(diff > 0 and p < level, rule, n, mn, mb, diff, t, p)

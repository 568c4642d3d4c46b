"""Losses of the output layer: label matching, exact match, number presence (dln-reference §1.3 step 2).

The reference post-processes predictions by keeping one lowercased word; dlc keeps that normalisation for free-text
exact match but matches `choice` outputs against the whole verbalizer set, so "(A)", "a" and "Option A" agree.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from dlc.ir import Label

_WS = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w\s]|\d|_")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize(text: str) -> str:
    """Lowercase, drop punctuation and surrounding space, collapse inner whitespace."""
    return _WS.sub(" ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def postprocess_prediction(text: str) -> str:
    """The reference's prediction normalisation: strip non-word characters and digits, lowercase, keep the first word
    (or the word after "option", so "Option (B)" -> "b")."""
    words = _WS.sub(" ", _NON_WORD.sub(" ", text.lower())).split()
    if not words:
        return ""
    if words[0] == "option" and len(words) > 1:
        return words[1]
    return words[0]


def exact_match(prediction: str, target: str) -> bool:
    """Free-text exact match after normalisation; falls back to the reference's first-word rule."""
    if normalize(prediction) == normalize(target):
        return True
    return postprocess_prediction(prediction) != "" and postprocess_prediction(prediction) == postprocess_prediction(target)


def _to_number(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def numbers_in(text: str) -> list[float]:
    """Every number written in `text` ("1,234.50" -> 1234.5), in order."""
    out = []
    for m in _NUMBER.finditer(text):
        v = _to_number(m.group(0))
        if v is not None:
            out.append(v)
    return out


def number_presence(prediction: str, target: str) -> bool:
    """GSM8K-style loss: the target number appears as a whole number in the prediction ("12340" does not contain
    1234; "$1,234.50" contains 1234.5)."""
    t = _to_number(target.split("####")[-1].strip().replace("$", ""))
    if t is None:
        return normalize(target) != "" and normalize(target) in normalize(prediction)
    return any(abs(v - t) < 1e-9 for v in numbers_in(prediction))


def match_label(text: str, labels: Sequence[Label]) -> str | None:
    """The label a text names: its name or one of its verbalizers, after normalisation; None when nothing matches."""
    n = normalize(text)
    for lab in labels:
        if n == normalize(lab.name) or any(n == normalize(v) for v in lab.verbalizers):
            return lab.name
    p = postprocess_prediction(text)
    if p:
        for lab in labels:
            if p == postprocess_prediction(lab.name) or any(p == postprocess_prediction(v) for v in lab.verbalizers):
                return lab.name
    return None


def is_correct(metric: str, prediction: str, target: str) -> bool:
    """0/1 correctness of one output under the graph's metric."""
    if metric == "accuracy":
        return prediction == target or normalize(prediction) == normalize(target)
    if metric == "exact_match":
        return exact_match(prediction, target)
    if metric == "number_presence":
        return number_presence(prediction, target)
    raise ValueError(f"unknown metric {metric!r}")


def accuracy(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0

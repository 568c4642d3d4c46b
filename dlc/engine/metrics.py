"""Losses of the output layer: label matching, exact match, number presence, final answer (dln-reference §1.3
step 2).

The reference post-processes predictions by keeping one lowercased word; dlc keeps that normalisation for free-text
exact match but matches `choice` outputs against the whole verbalizer set, so "(A)", "a" and "Option A" agree.

Numbers are compared as numbers (exact decimals, never floats formatted back to text): "1,234,000", "1234000" and
"1234000.00" are one number, "-7" is negative, "12345.67" keeps every digit. Two metrics judge a number answer:
`number_presence` (the reference's: the target number appears anywhere in the output text) and `final_answer` (the
output's final answer, `final_number`, is the target number).
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Iterable, Sequence

from dlc.ir import Label

_WS = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w\s]|\d|_")
# a number as written in text: optional sign (not after a letter or digit: "5-3" is 5 and 3), digits with optional
# thousands separators (groups of three: "1,2" is two numbers), optional decimals; "−" (U+2212) is a minus too
_NUMBER = re.compile(r"(?:(?<![\w.])[-\u2212])?(?:\d+(?:,\d{3})*(?:\.\d+)?|(?<!\d)\.\d+)")
# where a final answer is announced: GSM8K's "####", "the answer is", "answer:", "answer =", LaTeX \boxed{...}
_ANSWER_MARK = re.compile(r"####|\\boxed\{|\banswer\b\s*(?:is\b|:|=)", re.IGNORECASE)


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


def _to_number(s: str) -> Decimal | None:
    try:
        return Decimal(s.replace(",", "").replace("\u2212", "-"))
    except InvalidOperation:
        return None


def numbers_in(text: str) -> list[Decimal]:
    """Every number written in `text`, in order, as exact decimals ("1,234.50" -> 1234.50, "-3" -> -3)."""
    out = []
    for m in _NUMBER.finditer(text):
        v = _to_number(m.group(0))
        if v is not None:
            out.append(v)
    return out


def parse_number(text: str) -> Decimal | None:
    """`text` read as one number ("$1,234", "-7", "18.", "#### 72", "50%"), or None when it is not just a number."""
    t = text.split("####")[-1].strip().replace("$", "").rstrip("%.").strip()
    m = _NUMBER.fullmatch(t)
    return _to_number(m.group(0)) if m else None


def format_number(value: Decimal) -> str:
    """The canonical spelling of a number: every digit, no exponent, no separators or trailing zeros
    (1234000, 12345.67, -3.5, 0)."""
    if value == 0:
        return "0"
    s = format(value.normalize(), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def final_number(text: str) -> Decimal | None:
    """The final answer of a worked solution: the first number after the last answer marker ("####", "the answer
    is", "answer:", "\\boxed{"), else the last number of the text (so "It is 72. Check: 3 apples" answers 3: that
    output is right under `number_presence`, not under `final_answer`); None when the text has no number."""
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        after = numbers_in(text[marks[-1].end():])
        if after:
            return after[0]
    nums = numbers_in(text)
    return nums[-1] if nums else None


def number_presence(prediction: str, target: str) -> bool:
    """GSM8K-style loss (the reference's): the target number appears as a whole number anywhere in the output
    ("12340" does not contain 1234; "$1,234.50" contains 1234.5). A target that is not a number must appear as
    text."""
    t = parse_number(target)
    if t is None:
        return normalize(target) != "" and normalize(target) in normalize(prediction)
    return any(v == t for v in numbers_in(prediction))


def final_answer(prediction: str, target: str) -> bool:
    """The output's final answer (`final_number`) is the target number; a target that is not a number is compared
    by exact match with the text after the last answer marker (the whole text when there is none)."""
    t = parse_number(target)
    if t is None:
        marks = list(_ANSWER_MARK.finditer(prediction))
        return exact_match(prediction[marks[-1].end():] if marks else prediction, target)
    return final_number(prediction) == t


def same_number(a: str, b: str) -> bool:
    """Both texts are one number each, and the same number ("1,234,000" and "1234000.0")."""
    x, y = parse_number(a), parse_number(b)
    return x is not None and x == y


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


def is_correct(metric: str, prediction: str, target: str, output: str | None = None) -> bool:
    """0/1 correctness of one output under the graph's metric. `prediction` is what the output layer answers (a
    label name, a number answer's `final_number`, or the text); `output` is its whole text (default: the
    prediction), which `number_presence` and `final_answer` read. Numbers compare as numbers under every metric."""
    text = prediction if output is None else output
    if metric == "accuracy":
        return prediction == target or normalize(prediction) == normalize(target) or same_number(prediction, target)
    if metric == "exact_match":
        return exact_match(prediction, target) or same_number(prediction, target)
    if metric == "number_presence":
        return number_presence(text, target)
    if metric == "final_answer":
        return final_answer(text, target)
    raise ValueError(f"unknown metric {metric!r}")


def accuracy(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0

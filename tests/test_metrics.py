from __future__ import annotations

from dlc.ir import Label
from dlc.engine.metrics import (exact_match, is_correct, match_label, normalize, number_presence, numbers_in,
                         postprocess_prediction)

LABELS = (Label("A", ("(A)", "A")), Label("B", ("(B)", "B")))


def test_normalize_and_postprocess():
    assert normalize("  Hello,   World! ") == "hello world"
    assert postprocess_prediction("Option (A)") == "a"
    assert postprocess_prediction("foo123bar") == "foo"
    assert postprocess_prediction("Yes, it is.") == "yes"
    assert postprocess_prediction("!!") == ""


def test_exact_match():
    assert exact_match("Positive.", "positive")
    assert exact_match("positive, because", "positive")
    assert not exact_match("negative", "positive")


def test_number_presence():
    assert number_presence("so 01234,000 apples", "1234000")
    assert number_presence("The total is $1,234.50", "1234.5")
    assert not number_presence("12340", "1234")
    assert number_presence("answer: 18", "Janet makes... #### 18")
    assert numbers_in("a -3 and 2.5 and 1,000") == [-3.0, 2.5, 1000.0]


def test_match_label():
    assert match_label("(A)", LABELS) == "A"
    assert match_label("b", LABELS) == "B"
    assert match_label("Option (B)", LABELS) == "B"
    assert match_label("C", LABELS) is None


def test_is_correct_by_metric():
    assert is_correct("accuracy", "A", "A")
    assert not is_correct("accuracy", "A", "B")
    assert is_correct("exact_match", "Yes.", "yes")
    assert is_correct("number_presence", "it is 42", "42")

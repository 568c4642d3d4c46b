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


# GSM8K-style answers: numbers compare as numbers (issue 17, engine 1)
GSM = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"


def test_numbers_are_exact_decimals():
    from decimal import Decimal
    from dlc.engine.metrics import format_number, parse_number
    assert numbers_in("1,234,000 and 12345.67 and -7 and 5-3 and 1,2") == \
        [Decimal("1234000"), Decimal("12345.67"), Decimal("-7"), 5, 3, 1, 2]
    assert format_number(Decimal("1234000")) == "1234000" and format_number(Decimal("12345.67")) == "12345.67"
    assert format_number(Decimal("-3.50")) == "-3.5" and format_number(Decimal("-0.0")) == "0"
    assert format_number(Decimal("123456789012")) == "123456789012"
    assert parse_number("$1,234,000") == 1234000 and parse_number("#### -12") == -12 and parse_number("18.") == 18
    assert parse_number("72 apples") is None and parse_number("") is None


def test_number_presence_is_anywhere_in_the_output():
    assert number_presence("It is 72. Check: 3 apples", "72")
    assert number_presence("They earn $1,234,000 a year.", "1234000")
    assert number_presence("1234000", "1,234,000")
    assert number_presence("The total is 12345.67 dollars", "12345.67")
    assert not number_presence("The total is 12345.7 dollars", "12345.67")
    assert number_presence("The change is -15 degrees", "-15") and not number_presence("it is 15", "-15")
    assert number_presence("Answer: 2500000", "2,500,000") and not number_presence("2.5e+06", "2500000")
    assert number_presence(GSM, "72") and number_presence(GSM, "24") and not number_presence(GSM, "7")


def test_final_answer_reads_the_announced_or_last_number():
    from dlc.engine.metrics import final_answer, final_number
    assert final_number(GSM) == 72 and final_answer(GSM, "72") and not final_answer(GSM, "24")
    assert final_number("The answer is 1,234,000. Check: 3 apples") == 1234000
    assert final_number("It is 72. Check: 3 apples") == 3 and not final_answer("It is 72. Check: 3 apples", "72")
    assert final_number("so x = \\boxed{-4.25} (from 2 steps)") == -4.25
    assert final_number("no number here") is None and not final_answer("no number here", "3")
    assert final_answer("Answer: 12345.67", "12345.67") and not final_answer("Answer: 12345.7", "12345.67")
    assert final_answer("The answer is yes", "yes")                     # a text target: exact match


def test_is_correct_compares_numbers_as_numbers():
    assert is_correct("accuracy", "1234000", "1,234,000") and is_correct("exact_match", "-7", "-7.0")
    assert not is_correct("accuracy", "1.234e+06", "1,234,000")
    assert is_correct("number_presence", "72", "72", output="It is 72. Check: 3 apples")
    assert not is_correct("final_answer", "3", "72", output="It is 72. Check: 3 apples")
    assert is_correct("final_answer", "72", "72", output="It is 3 and 4. The answer is 72.")

"""dlc.lang.recovery: a file with syntax errors also reports the semantic errors of the statements that parse, and
none that only a broken statement causes."""
from __future__ import annotations

import pytest

from dlc.errors import CompileFailed
from dlc.lang.compiler import compile_source

HEAD = 'network demo\ninput x\n\n'
LAYER_H = 'layer h(x) {\n  template = step_by_stp\n  prompt = "Think."\n}\n\n'          # E301 at 5:14
FIT_TYPO = 'data { task = "subj" }\nfit { iters = 2  batch_siz = 4 }\n'


def codes(text: str) -> list[tuple[str, int, int]]:
    with pytest.raises(CompileFailed) as ei:
        compile_source(text, "net.dln")
    return [(e.code, e.span.line, e.span.col) for e in ei.value.errors if e.span is not None]


def test_semantic_errors_of_the_statements_that_parse_come_with_the_syntax_error():
    broken_y = 'layer y(x, h) {\n  template = residual\n  prompt = "Answer." extra\n}\n\n'
    text = HEAD + LAYER_H + broken_y + 'output y { target = label  metric = accuracy }\n' + FIT_TYPO
    got = codes(text)
    assert ("E301", 5, 14) in got                      # before the syntax error
    assert ("E312", 16, 18) in got                     # after it
    assert [c for c, _, _ in got].count("E201") == 1 and len(got) == 3, got
    # `output y` names the broken layer: its "unknown layer" is a consequence, not an error of the user's
    assert not any(line == 15 for _, line, _ in got), got


def test_without_a_syntax_error_the_same_semantic_errors_are_found():
    fine_y = 'layer y(x, h) {\n  template = residual\n  prompt = "Answer."\n}\n\n'
    got = codes(HEAD + LAYER_H + fine_y + 'output y { target = label  metric = accuracy }\n' + FIT_TYPO)
    assert sorted(got) == [("E301", 5, 14), ("E312", 16, 18)]


def test_an_input_list_that_does_not_parse_hides_the_errors_about_its_names():
    got = codes("input x, ctx,\nlayer y(x, ctx) {}\noutput y\n")
    assert [c for c, _, _ in got] == ["E201"], got


def test_graph_level_errors_are_not_reported_when_a_statement_is_missing():
    # the output statement is broken: "no output" would be an error only because it did not parse
    got = codes(HEAD + 'layer y(x) {\n  prompt = "Answer."\n}\noutput y { target = }\n')
    assert [c for c, _, _ in got] == ["E210"], got


def test_a_misspelled_statement_keyword_reports_only_syntax():
    # what `layr` declares is unknown, so no semantic error can be trusted
    got = codes(HEAD + 'layr h(x) {\n  prompt = "a"\n}\nlayer y(x) {\n  template = nope\n}\noutput y\n')
    assert all(c.startswith("E2") for c, _, _ in got), got


def test_a_bad_escape_in_a_statement_that_parses_is_reported_with_the_syntax_error():
    # the statement-by-statement syntax check parses without converting: only the recovery's conversion sees E209
    text = HEAD + 'layer y(x) {\n  prompt = "a \\q b"\n}\noutput y { target = }\n'
    got = codes(text)
    assert sorted(c for c, _, _ in got) == ["E209", "E210"], got

"""The .dln parser: syntax tree shapes, string literals, and friendly syntax errors."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from dlc.lang import syntax as S
from dlc.errors import CompileFailed, DlcSyntaxError
from dlc.lang.parse import decode_string, encode_block_string, encode_long_string, parse, parse_value

SRC = '''# a comment
network demo
input question, context
model fast { backend = embedded  model = "small" }
layer h(question) {
  prompt = """
    First line.
      Indented line.
  """
  stop = ["\\n\\n", "END"]   max_tokens = 64
  backward { posterior = { prior_answer: 0.25, "custom.j2": 0.75 } }
}
layer y(question, context, h) {
  output = choice { yes: "yes" | "Yes", "no": "no" }
  template = file "t.j2"
  fixed = true  temperature = 0.5  answer_prefix = "The answer is ("
}
output y
fit { iters = 3, tolerance = -1, posterior_temp = 1e2 }
'''


def test_statements_and_values() -> None:
    p = parse(SRC, "demo.dln")
    kinds = [type(s).__name__ for s in p.statements]
    assert kinds == ["NetworkDecl", "InputDecl", "ModelDecl", "LayerDecl", "LayerDecl", "OutputDecl", "ConfigDecl"]
    inputs = p.of_type(S.InputDecl)[0]
    assert [n.name for n in inputs.names] == ["question", "context"]
    h, y = p.of_type(S.LayerDecl)
    assert [n.name for n in y.parents] == ["question", "context", "h"]
    hs = {it.key: it.value for it in h.body.items if isinstance(it, S.Setting)}
    assert hs["prompt"] == S.Str("First line.\n  Indented line.", hs["prompt"].span, long=True,
                                 content_line=7, content_col=1)
    assert [i.value for i in hs["stop"].items] == ["\n\n", "END"]
    assert hs["max_tokens"].value == 64 and isinstance(hs["max_tokens"].value, int)
    nested = [it for it in h.body.items if isinstance(it, S.Nested)][0]
    post = nested.body.items[0].value
    assert [(e.key, e.value.value) for e in post.entries] == [("prior_answer", 0.25), ("custom.j2", 0.75)]
    ys = {it.key: it.value for it in y.body.items}
    assert isinstance(ys["output"], S.Tagged) and ys["output"].tag.name == "choice"
    labels = ys["output"].map.entries
    assert [e.key for e in labels] == ["yes", "no"]
    assert [o.value for o in labels[0].value.options] == ["yes", "Yes"]
    assert isinstance(ys["template"], S.FileRef) and ys["template"].path.value == "t.j2"
    assert ys["fixed"].value is True
    fit = p.of_type(S.ConfigDecl)[0]
    vals = {it.key: it.value.value for it in fit.body.items}
    assert vals == {"iters": 3, "tolerance": -1, "posterior_temp": 100.0}


def test_spans_are_one_based_and_end_exclusive() -> None:
    p = parse("input x\nlayer y(x) { prompt = \"hi\" }\noutput y\n", "f.dln")
    y = p.of_type(S.LayerDecl)[0]
    assert (y.name.span.line, y.name.span.col, y.name.span.end_col) == (2, 7, 8)
    v = y.body.items[0].value
    assert (v.span.line, v.span.col, v.span.end_col) == (2, 23, 27)


def test_keywords_stay_usable_as_keys() -> None:
    p = parse("input x\nlayer y(x) { model = fast output = text }\noutput y\n")
    keys = [it.key for it in p.of_type(S.LayerDecl)[0].body.items]
    assert keys == ["model", "output"]


def test_block_string_rules() -> None:
    assert decode_string('"""\n  a\n    b\n  """')[0] == "a\n  b"
    assert decode_string('"""  inline  """')[0] == "  inline  "
    assert decode_string('"tab\\tq\\"uote\\u00e9"')[0] == 'tab\tq"uoteé'
    text, _, bad = decode_string('"a\\qb"')
    assert bad == [(2, "\\q")]


@given(st.text(alphabet=st.sampled_from(list('ab "\\\n\t{}#é')), max_size=40))
@settings(max_examples=200, deadline=None)
def test_encode_long_string_round_trips(text: str) -> None:
    src = f"input x\nlayer y(x) {{ prompt = {encode_long_string(text)} }}\noutput y\n"
    p = parse(src)
    assert p.of_type(S.LayerDecl)[0].body.items[0].value.value == text


@pytest.mark.parametrize("src,code,line,col,needle", [
    ('input x\nlayer y(x) {\n  prompt "a"\n}\noutput y', "E205", 3, 10, "missing '='"),
    ('input x\nlayer y(x) {\n  prompt: "a"\n}\noutput y', "E206", 3, 9, "key = value"),
    ('input x\nlayr y(x) {}\noutput y', "E204", 2, 1, "unknown statement 'layr'"),
    ('input x\nlayer y(x) {\n  prompt = "a\n}', "E202", 3, 12, "unterminated string"),
    ('input x\nlayer y(x) {\n  prompt = "a"\n', "E203", 2, 12, "never closed"),
    ('input x\nlayer y(x) {\n  prompt = "a"\noutput y', "E203", 2, 12, "never closed"),
])
def test_friendly_syntax_errors(src: str, code: str, line: int, col: int, needle: str) -> None:
    with pytest.raises(CompileFailed) as ei:
        parse(src, "f.dln")
    (err,) = ei.value.errors
    assert isinstance(err, DlcSyntaxError)
    assert (err.code, err.span.line, err.span.col) == (code, line, col)
    assert needle in err.message
    rendered = err.render()
    assert rendered.startswith(f"f.dln:{line}:{col}: error[{code}]")
    assert "^" in rendered


def test_unknown_statement_hint() -> None:
    with pytest.raises(CompileFailed) as ei:
        parse("inptu x\n")
    assert ei.value.errors[0].hint == "did you mean 'input'?"


def test_parse_value() -> None:
    assert parse_value("5").value == 5
    assert parse_value("tiny").name == "tiny"
    assert [o.value for o in parse_value('"a" | "b"').options] == ["a", "b"]
    with pytest.raises(DlcSyntaxError):
        parse_value("Think step by step.")
    with pytest.raises(DlcSyntaxError):
        parse_value("x } fit { y = 1")


@given(st.text(alphabet=st.sampled_from(list('ab "\\\n\t#')), max_size=40), st.sampled_from(["", "  ", "\t"]))
@settings(max_examples=200, deadline=None)
def test_encode_block_string_is_exact_or_declines(text: str, indent: str) -> None:
    lit = encode_block_string(text, indent)
    if lit is None:
        return
    src = f"input x\nlayer y(x) {{\n{indent}prompt = {lit}\n}}\noutput y\n"
    assert parse(src).of_type(S.LayerDecl)[0].body.items[0].value.value == text


def test_encode_block_string_used_for_multi_line() -> None:
    assert encode_block_string("one\ntwo", "  ") == '"""\n    one\n    two\n  """'
    assert encode_block_string("single line", "") is None

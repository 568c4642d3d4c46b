"""Semantic errors of a file that has syntax errors: the statements that parse are still checked.

A user who fixes the one syntax error the compiler showed should not then meet ten semantic errors it could have
shown at the same time. The LALR parser cannot resynchronise after an error, but every top-level statement starts
with a keyword at the start of a line (_statement_starts below), so a broken file is cut into statements, each one
that does not parse on its own is blanked out (its newlines kept, so every line:col stays true), and the rest is
lowered as a program of its own.

What that lowering says is filtered, because a missing statement causes errors that are not there:
- only errors located inside a statement that parsed are kept (a graph-level error — no output, a dangling
  layer, a cycle — may exist only because a statement is missing);
- an error that names something a broken statement declares (`layer h(...) {` broken: "unknown parent 'h'") is
  dropped;
- nothing is reported when a broken statement's kind or name cannot be read (the file is cut wrongly).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from lark.exceptions import UnexpectedInput

from dlc.errors import CompileFailed, DlcError, DlcSyntaxError, did_you_mean
from dlc.lang import syntax as S
from dlc.lang.parse import parser
from dlc.lang.syntax_errors import STATEMENT_KEYWORDS, friendly

# `layer h(x) {`, `input x, ctx`, `model m {`, `output y {`: the names in a statement's header (what it declares
# and what it reads; a network's own name, data and fit declare nothing another statement refers to)
_DECLARING = ("layer", "input", "model", "output")
_NAMELESS = ("network", "data", "fit")
_NAME = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class _Statement:
    """One top-level statement of a file: text[start:end], parsed on its own (`error` None when it parses)."""

    start: int
    end: int
    line: int
    chunk: str                      # the statement preceded by its line's worth of newlines: positions stay true
    error: UnexpectedInput | None


@functools.lru_cache(maxsize=4)
def _statements(text: str) -> tuple[_Statement, ...]:
    """The file cut at its statement keywords, each statement parsed alone — once per text: parse() asks for the
    later syntax errors and the compiler for the semantic ones of the same broken file."""
    starts = _statement_starts(text)
    out = []
    for a, b in zip(starts, starts[1:] + [len(text)]):
        line = text.count("\n", 0, a) + 1
        chunk = "\n" * (line - 1) + text[a:b]
        try:
            parser().parse(chunk)
            error = None
        except UnexpectedInput as e:
            error = e
        out.append(_Statement(a, b, line, chunk, error))
    return tuple(out)


def later_syntax_errors(text: str, path: str, after_line: int) -> list[DlcSyntaxError]:
    """Syntax errors of the statements that start after the first error's line, each parsed on its own (the
    parser cannot resynchronise after an error, but every top-level statement starts with a keyword at the start
    of a line, so the rest of the file can still be checked statement by statement)."""
    return [friendly(st.error, st.chunk, path) for st in _statements(text)
            if st.line > after_line and st.error is not None]


def semantic_errors_beside_syntax(text: str, path: str, lower: Callable[[S.Program], object]) -> list[DlcError]:
    """The errors of the statements of `text` that parse: what converting them finds (a bad escape, E209, which
    the statement-by-statement syntax check does not see), else the semantic errors `lower(program)` raises
    (CompileFailed), minus those a broken statement may cause. [] when the file cannot be cut safely."""
    from dlc.lang.parse import _Converter

    statements = _statements(text)
    if not statements or not _only_comments(text[:statements[0].start]):
        return []                                   # nothing, or something before the first statement: cut unsure
    broken_names: set[str] = set()
    for st in statements:
        if st.error is None:
            continue
        keyword = _NAME.match(text, st.start)
        if keyword is not None and keyword.group() in _DECLARING:
            header = re.split(r"[{\n]", text[st.start:st.end], maxsplit=1)[0]
            broken_names.update(_NAME.findall(header)[1:])
        elif keyword is None or keyword.group() not in _NAMELESS:
            return []                               # a misspelled keyword: what it declares is unknown
    kept = [st for st in statements if st.error is None]
    if not kept or len(kept) == len(statements):
        return []                                   # all broken, or none: parse() reported everything there is
    blanked = list(text)
    for st in statements:
        if st.error is not None:
            for i in range(st.start, st.end):
                if blanked[i] != "\n":
                    blanked[i] = " "
    try:
        tree = parser().parse("".join(blanked))
    except UnexpectedInput:
        return []
    conv = _Converter(path, text)
    program = conv.program(tree)
    if conv.errors:
        return list(conv.errors)
    try:
        lower(program)
    except CompileFailed as e:
        found: Sequence[DlcError] = e.errors
    except Exception:               # noqa: BLE001 - a partial program must never turn a syntax error into a crash
        return []
    else:
        return []
    lines = [(st.line, text.count("\n", 0, st.end - 1) + 1) for st in kept]
    return [err for err in found
            if err.span is not None and err.span.path == path and any(lo <= err.span.line <= hi for lo, hi in lines)
            and not any(re.search(rf"'{re.escape(n)}'", str(err.message)) for n in broken_names)]


_STATEMENT_LINE_RE = re.compile(r"^([A-Za-z_]\w*)\b(?![ \t]*[=:])", re.M)
_STRING_RE = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"', re.S)


def _statement_starts(text: str) -> list[int]:
    """Offsets of lines that start with a statement keyword, outside string literals."""
    inside = [(m.start(), m.end()) for m in _STRING_RE.finditer(text)]
    return [m.start() for m in _STATEMENT_LINE_RE.finditer(text)
            if (m.group(1) in STATEMENT_KEYWORDS or did_you_mean(m.group(1), STATEMENT_KEYWORDS))
            and not any(a < m.start() < b for a, b in inside)]


def _only_comments(text: str) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines())

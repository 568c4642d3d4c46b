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

import re
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


def semantic_errors_beside_syntax(text: str, path: str,
                                  lower: Callable[[S.Program], None]) -> list[DlcError]:
    """The semantic errors of the statements of `text` that parse, as `lower(program)` raises them (CompileFailed),
    minus those a broken statement may cause. [] when the file cannot be cut into statements safely."""
    from dlc.lang.parse import _Converter

    starts = _statement_starts(text)
    if not starts:
        return []
    bounds = list(zip(starts, starts[1:] + [len(text)]))
    if not _only_comments(text[:starts[0]]):
        return []                                   # something before the first statement: cut unsure
    kept: list[tuple[int, int]] = []
    broken_names: set[str] = set()
    for a, b in bounds:
        line = text.count("\n", 0, a) + 1
        chunk = "\n" * (line - 1) + text[a:b]
        try:
            parser().parse(chunk)
            kept.append((a, b))
        except UnexpectedInput:
            stmt = text[a:b]
            keyword = _NAME.match(stmt)
            if keyword is not None and keyword.group() in _DECLARING:
                header = re.split(r"[{\n]", stmt, maxsplit=1)[0]
                broken_names.update(_NAME.findall(header)[1:])
            elif keyword is None or keyword.group() not in _NAMELESS:
                return []                           # a misspelled keyword: what it declares is unknown
    if not kept:
        return []
    blanked = list(text)
    for a, b in bounds:
        if (a, b) not in kept:
            for i in range(a, b):
                if blanked[i] != "\n":
                    blanked[i] = " "
    partial = "".join(blanked)
    try:
        tree = parser().parse(partial)
    except UnexpectedInput:
        return []
    conv = _Converter(path, text)
    program = conv.program(tree)
    if conv.errors:
        return []                                   # the converter's own errors are reported by parse()
    try:
        lower(program)
    except CompileFailed as e:
        found: Sequence[DlcError] = e.errors
    except Exception:               # noqa: BLE001 - a partial program must never turn a syntax error into a crash
        return []
    else:
        return []
    lines = [(text.count("\n", 0, a) + 1, text.count("\n", 0, b - 1) + 1) for a, b in kept]
    out = []
    for err in found:
        sp = err.span
        if sp is None or sp.path != path or not any(lo <= sp.line <= hi for lo, hi in lines):
            continue
        if any(re.search(rf"'{re.escape(n)}'", str(err.message)) for n in broken_names):
            continue
        out.append(err)
    return out


def later_syntax_errors(text: str, path: str, after_line: int) -> list[DlcSyntaxError]:
    """Syntax errors of the statements that start after the first error's line, each parsed on its own (the
    parser cannot resynchronise after an error, but every top-level statement starts with a keyword at the start
    of a line, so the rest of the file can still be checked statement by statement)."""
    starts = _statement_starts(text) + [len(text)]
    errors: list[DlcSyntaxError] = []
    for a, b in zip(starts, starts[1:]):
        line = text.count("\n", 0, a) + 1
        if line <= after_line:
            continue
        chunk = "\n" * (line - 1) + text[a:b]
        try:
            parser().parse(chunk)
        except UnexpectedInput as e:
            errors.append(friendly(e, chunk, path))
    return errors


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

"""Text that is not text: lone UTF-16 surrogates (U+D800..U+DFFF outside a pair), which JSON's `\\ud800` escapes and
undecodable bytes read with `surrogateescape` put into Python strings. They cannot be encoded as UTF-8, so one of
them in a data row, a request body or a model's answer used to surface as a UnicodeEncodeError traceback wherever
the text was next hashed, cached or written. Input is refused where it enters (naming where it is); a model's
output, which the user cannot fix, has them replaced by U+FFFD.
"""
from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_DEPTH = 64          # JSON values nested deeper than this are refused (no data row or request needs more)


def bad_char(text: str) -> int | None:
    """The index of the first lone surrogate in `text`, or None when it is valid text. (A well-formed pair is one
    character in a Python string, so any surrogate code point left is a lone one.)"""
    m = _SURROGATE.search(text)
    return m.start() if m else None


def find_bad_text(value: Any, where: str = "", depth: int = 0) -> str | None:
    """Where in a JSON value (`where` + `.key` / `[i]`) a string holds a lone surrogate, or None. Keys count too."""
    if isinstance(value, str):
        return where or "the value" if bad_char(value) is not None else None
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and bad_char(k) is not None:
                return f"{where}{'.' if where else ''}{k!a}"
            found = find_bad_text(v, f"{where}{'.' if where else ''}{k}", depth + 1)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = find_bad_text(v, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None


def valid_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (for a model's output, which must still be stored)."""
    return _SURROGATE.sub("\ufffd", text) if bad_char(text) is not None else text


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply `value` nests lists and objects, counted up to `limit + 1` (iteratively: no recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            d += 1
            deepest = max(deepest, d)
            if d > limit:
                return d
            stack.extend((c, d) for c in (v.values() if isinstance(v, dict) else v))
    return deepest

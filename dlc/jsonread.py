"""Reading JSON text that a user, a file or a server hands dlc, with one exception for every way it can fail.

`json.loads` fails in three ways, not one: a syntax error (`JSONDecodeError`, with a line), a number of more than
4300 digits (a plain `ValueError` from Python's integer-conversion limit) and nesting deeper than the parser's
recursion (`RecursionError`). Callers that caught only the first turned the other two into tracebacks; here all
three become `BadJSON`, which each caller words as its own error code."""
from __future__ import annotations

import json
from typing import Any


class BadJSON(ValueError):
    """Why a JSON text could not be read; `lineno` is its line (1-based) when the parser knows it."""

    def __init__(self, msg: str, lineno: int | None = None, colno: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.lineno = lineno
        self.colno = colno

    def where(self) -> str:
        """`line L, column C: ` (or less, or nothing), to put before the message."""
        if self.lineno is None:
            return ""
        return f"line {self.lineno}, column {self.colno}: " if self.colno is not None else f"line {self.lineno}: "


def loads(text: str | bytes) -> Any:
    """`json.loads`, raising `BadJSON` for any text it cannot read."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadJSON(e.msg, e.lineno, e.colno) from None
    except RecursionError:
        raise BadJSON("lists or objects nested too deeply") from None
    except UnicodeDecodeError:  # bytes given that are not UTF-8 (a ValueError too, caught before the next line)
        raise BadJSON("not UTF-8 text") from None
    except ValueError:          # int('1' * 5000): Python refuses integer strings of more than 4300 digits
        raise BadJSON("a number too long to read (more than 4300 digits)") from None

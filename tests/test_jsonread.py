"""dlc.jsonread: every way `json.loads` fails is one `BadJSON` (a syntax error with its line, a number over Python's
4300-digit integer limit, nesting past the parser's recursion), so no reader can let the last two through as a
traceback."""
from __future__ import annotations

import pytest

from dlc import jsonread


def test_valid_text_reads_as_json() -> None:
    assert jsonread.loads('{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    assert jsonread.loads(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("text, msg, lineno", [
    ('{"a": 1,\n  oops}', "Expecting property name enclosed in double quotes", 2),
    ('{"a": ' + "1" * 5000 + "}", "a number too long to read (more than 4300 digits)", None),
    ("[" * 100_000 + "]" * 100_000, "lists or objects nested too deeply", None),
    (b'{"a": "\xff"}', "not UTF-8 text", None),
])
def test_every_failure_is_bad_json(text: str | bytes, msg: str, lineno: int | None) -> None:
    with pytest.raises(jsonread.BadJSON) as info:
        jsonread.loads(text)
    assert info.value.msg == msg and info.value.lineno == lineno
    assert isinstance(info.value, ValueError)     # callers that caught ValueError still do
    assert info.value.where() == ("line 2, column 3: " if lineno else "")

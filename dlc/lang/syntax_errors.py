"""Lark's parse exceptions -> `DlcSyntaxError`s a person can act on: the E2xx codes, what was expected in words,
and the likely mistake (an unclosed brace, `key: value`, unquoted text) located at its cause, not where the LALR
parser happened to notice it. Pure functions of the exception and the text: no parser is built here.
"""
from __future__ import annotations

import re
from typing import Iterator

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dlc.errors import DlcSyntaxError, SourceSpan, did_you_mean

STATEMENT_KEYWORDS = ("network", "input", "model", "layer", "output", "data", "fit")

# Syntax error codes (E2xx). Kept in one table so the README and the broken-file corpus can list them.
E_UNEXPECTED = "E201"       # generic: unexpected token
E_UNTERMINATED = "E202"     # unterminated string
E_UNBALANCED = "E203"       # unclosed or unmatched bracket
E_STATEMENT = "E204"        # unknown statement keyword
E_MISSING_EQ = "E205"       # `key value` without '='
E_SEPARATOR = "E206"        # ':' where '=' belongs (or the reverse)
E_CHARACTER = "E207"        # a character that starts no token
E_EOF = "E208"              # the file ends inside a statement
E_ESCAPE = "E209"           # unknown escape sequence in a string
E_MISSING_VALUE = "E210"    # `key =` with no value
E_PARENTS = "E211"          # `layer h { ... }` without `(parents)`
E_UNQUOTED = "E212"         # `prompt = two words` without quotes
E_SURROGATE = "E213"        # a \uXXXX escape of a lone surrogate (U+D800..U+DFFF): not a character
E_NUMBER = "E214"           # a number literal longer than MAX_NUMBER_CHARS
E_NESTING = "E215"          # lists/maps nested deeper than MAX_NESTING
E_SIZE = "E216"             # a source (or --set value) over MAX_SOURCE_CHARS

_TERMINAL_NAMES = {
    "EQUAL": "'='", "COMMA": "','", "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'",
    "LSQB": "'['", "RSQB": "']'", "COLON": "':'", "VBAR": "'|'", "NAME": "a name", "STRING": "a string",
    "LONG_STRING": "a string", "NUMBER": "a number", "$END": "end of file",
}


def _expected_names(expected: set[str]) -> list[str]:
    out = []
    for term in sorted(expected):
        name = _TERMINAL_NAMES.get(term)
        if name is None:
            name = f"'{term.lower()}'"
        if name not in out:
            out.append(name)
    return out


def _brackets(text: str) -> Iterator[tuple[str, int]]:
    """Bracket characters outside strings and comments, with their offsets."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith('"""', i):
            m = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""', re.S).match(text, i)
            i = m.end() if m else n
            continue
        if c == '"':
            m = re.compile(r'"(?:[^"\\\n]|\\.)*"').match(text, i)
            i = m.end() if m else i + 1
            continue
        if c in "{}[]()":
            yield c, i
        i += 1


def _unclosed(text: str) -> tuple[str, int] | None:
    stack: list[tuple[str, int]] = []
    pairs = {"}": "{", "]": "[", ")": "("}
    for c, i in _brackets(text):
        if c in "{[(":
            stack.append((c, i))
        elif stack and stack[-1][0] == pairs[c]:
            stack.pop()
    return stack[-1] if stack else None


def _pos(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def friendly(e: UnexpectedInput, text: str, path: str) -> DlcSyntaxError:
    def err(msg: str, code: str, line: int, col: int, width: int = 1, hint: str | None = None) -> DlcSyntaxError:
        return DlcSyntaxError(msg, code=code, span=SourceSpan(path, line, col, line, col + max(1, width)), hint=hint)

    if isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream
        ch = text[pos] if pos < len(text) else ""
        line, col = e.line, e.column
        if pos >= 2 and text.startswith('"""', pos - 2):   # `""` lexed as an empty string, then the rest
            line, col = _pos(text, pos - 2)
            return err("unterminated triple-quoted string", E_UNTERMINATED, line, col, 3, hint='close it with """')
        if text.startswith('"""', pos):
            return err("unterminated triple-quoted string", E_UNTERMINATED, line, col, 3,
                       hint='close it with """')
        if ch == '"':
            return err("unterminated string", E_UNTERMINATED, line, col, 1,
                       hint='close the string with " on the same line, or use """...""" for text that spans lines')
        if ch == "'":
            return err("strings use double quotes", E_CHARACTER, line, col, 1, hint='write "text", not \'text\'')
        return err(f"unexpected character {ch!r}", E_CHARACTER, line, col, 1,
                   hint="names are letters, digits and _; quote any other text")

    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        open_ = _unclosed(text)
        if open_ is not None:
            line, col = _pos(text, open_[1])
            closer = {"{": "}", "[": "]", "(": ")"}[open_[0]]
            return err(f"'{open_[0]}' is never closed", E_UNBALANCED, line, col, 1,
                       hint=f"add the matching '{closer}'")
        line, col = _pos(text, len(text.rstrip()))
        return err("unexpected end of file", E_EOF, line, max(1, col), 1,
                   hint="the last statement is incomplete")

    assert isinstance(e, UnexpectedToken)
    tok = e.token
    expected = set(e.expected)
    line, col = tok.line, tok.column
    width = max(1, len(str(tok))) if "\n" not in str(tok) else 1
    shown = str(tok) if len(str(tok)) <= 30 else str(tok)[:27] + "..."
    statement_start = {k.upper() for k in STATEMENT_KEYWORDS}
    if tok.type == "NAME" and statement_start & expected and "EQUAL" not in expected:
        head = text[:tok.start_pos or 0].rstrip()
        words = head.rsplit(None, 1)
        if len(words) == 2 and words[1] in STATEMENT_KEYWORDS and words[0].rstrip().endswith(","):
            comma = len(words[0].rstrip()) - 1   # `input x,` then `layer y`: the keyword was read as a name
            cl, cc = _pos(text, comma)
            return err("trailing ',' in a list of names", E_UNEXPECTED, cl, cc, 1,
                       hint="remove the ',' (or add the missing name after it)")
        hint = did_you_mean(str(tok), STATEMENT_KEYWORDS) or \
            f"a statement starts with one of: {', '.join(STATEMENT_KEYWORDS)}"
        return err(f"unknown statement '{tok}'", E_STATEMENT, line, col, width, hint=hint)
    if tok.type == "NAME" and expected <= {"EQUAL", "LBRACE"}:
        # `key` followed by a name: usually a statement keyword read as a setting key because a '}' is missing
        offset = tok.start_pos if tok.start_pos is not None else 0
        line_start = text.rfind("\n", 0, offset) + 1
        before = text[line_start:offset].strip()
        if before in STATEMENT_KEYWORDS:
            open_ = _unclosed(text[:line_start])
            if open_ is not None and open_[0] == "{":
                bl, bc = _pos(text, open_[1])
                return err("'{' is never closed", E_UNBALANCED, bl, bc, 1,
                           hint=f"add '}}' before `{before}` on line {line}")
        m = re.match(r"(\s*)(\w+)(\s*=\s*)(\S.*)$", text[line_start:offset])
        if m:   # `prompt = Decompose the problem`: unquoted text with spaces
            vcol = len(m.group(1)) + len(m.group(2)) + len(m.group(3)) + 1
            rest = text[line_start:].split("\n", 1)[0][vcol - 1:].strip()
            return err("text with spaces must be quoted", E_UNQUOTED, line, vcol, len(rest),
                       hint=f'write {m.group(2)} = "{rest}"')
        last = before.split()[-1] if before.split() else "the key"
        return err(f"missing '=' after '{last}'", E_MISSING_EQ, line, col, width, hint="write `key = value`")
    if tok.type == "RBRACE" and statement_start & expected:
        return err("unmatched '}'", E_UNBALANCED, line, col, 1, hint="remove it, or open the block with '{'")
    if tok.type in ("RPAR", "RSQB") and "EQUAL" not in expected and "COLON" not in expected \
            and tok.type not in expected:
        return err(f"unmatched '{tok}'", E_UNBALANCED, line, col, 1, hint="check the brackets")
    if tok.type == "COLON" and "LBRACE" in expected and "EQUAL" not in expected:
        return err("a body is written in braces, not after ':'", E_SEPARATOR, line, col, 1,
                   hint="write `layer y(x) { ... }`")
    if "EQUAL" in expected and tok.type == "COLON":
        return err("settings are written `key = value`, not `key: value`", E_SEPARATOR, line, col, 1,
                   hint="replace ':' with '=' (':' separates the entries of a map { k: v })")
    if "COLON" in expected and tok.type == "EQUAL":
        return err("map entries are written `key: value`", E_SEPARATOR, line, col, 1,
                   hint="replace '=' with ':' inside { ... } maps")
    if "EQUAL" in expected and tok.type in ("STRING", "LONG_STRING", "NUMBER", "TRUE", "FALSE", "LSQB", "FILE"):
        return err(f"missing '=' before {shown}", E_MISSING_EQ, line, col, width,
                   hint="write `key = value`")
    if tok.type == "EQUAL" and "EQUAL" not in expected:
        return err("unexpected '=': the setting before it has no value", E_MISSING_VALUE, line, col, 1,
                   hint="a value must follow '=' (on the same line or the next), e.g. `prompt = \"...\"`")
    if "LPAR" in expected and tok.type == "LBRACE":
        return err("a layer declares its parents in parentheses", E_PARENTS, line, col, 1,
                   hint="write `layer name(x) { ... }` where x is an input or another layer")
    value_starts = {"STRING", "LONG_STRING", "NUMBER", "NAME", "TRUE", "FALSE", "FILE", "LSQB", "LBRACE"}
    if value_starts <= expected | {"TRUE", "FALSE", "FILE"} and "STRING" in expected and "NUMBER" in expected:
        return err(f"missing value before {shown!r}", E_MISSING_VALUE, line, col, width,
                   hint='every setting needs a value, e.g. `prompt = "..."`')
    names = _expected_names(expected)
    return err(f"unexpected {shown!r}; expected {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}",
               E_UNEXPECTED, line, col, width, hint=_generic_hint(tok, expected))


def _generic_hint(tok: Token, expected: set[str]) -> str | None:
    if tok.type == "LSQB" and "LBRACE" in expected:
        return 'labels are a map: choice { yes: "yes" | "Yes", no: "no" }'
    if "COMMA" in expected and ("RSQB" in expected or "RBRACE" in expected):
        return "separate list items and map entries with ','"
    if tok.type == "NAME" and "RBRACE" in expected:
        return "a setting is `key = value`; nested blocks are `name { ... }`"
    if tok.type == "NAME" and ("COMMA" in expected or "RSQB" in expected or "RBRACE" in expected):
        return "separate list items and map entries with ','"
    if "RPAR" in expected:
        return "parents are names separated by ',': `layer y(x, h)`"
    return None

"""`.dln` text -> `syntax.Program`: the LALR parse of grammar/dln.lark, and the one boundary where Lark's exceptions
become `DlcSyntaxError`s with a span and a friendly message (style guide: wrap each third-party library once).

The parse tree is converted by a plain recursive function rather than a Lark Transformer, so that an error found
while converting (a bad escape in a string) is a normal DlcError and never a `VisitError`.
"""
from __future__ import annotations

import functools
import re
from typing import Iterator

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dlc.lang import syntax as S
from dlc.errors import CompileFailed, DlcError, DlcSyntaxError, SourceSpan, did_you_mean
from dlc.resources import grammar_dir

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

MAX_NUMBER_CHARS = 100      # no setting needs more; int() refuses > 4300 digits with a ValueError
MAX_NESTING = 32            # lists/maps inside lists/maps: the converter (and every later pass) recurses
MAX_SOURCE_CHARS = 1 << 20  # a .dln, and a --set value: a network with long prompts is ~10k; the parser's memory
                            # grows several hundred times the size of a long token (5 MB of string: 1.7 GB RSS)


def check_size(text: str, path: str, what: str = "source") -> None:
    """E216 for a source or value over MAX_SOURCE_CHARS, before the parser sees it."""
    if len(text) > MAX_SOURCE_CHARS:
        raise DlcSyntaxError(f"the {what} is {len(text):,} characters, over the cap of {MAX_SOURCE_CHARS:,}",
                             code=E_SIZE, span=SourceSpan(path, 1, 1), source=text[:200],
                             hint="long prompts and templates go in template files (`template = file \"t.j2\"`, "
                                  "at most 1 MiB); a network itself is a few kB")


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    """The cached LALR parser (contextual lexer: keywords like `model` or `output` stay usable as setting keys)."""
    text = (grammar_dir() / "dln.lark").read_text(encoding="utf-8")
    return Lark(text, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False)


def parse(text: str, path: str = "<string>") -> S.Program:
    """Parse .dln source. Raises CompileFailed (of DlcSyntaxErrors) on any syntax error."""
    try:
        check_size(text, path)
    except DlcSyntaxError as e:
        raise CompileFailed([e]) from None
    try:
        tree = parser().parse(text)
    except UnexpectedInput as e:
        first = _friendly(e, text, path)
        errors = [first] + _later_errors(text, path, getattr(e, "line", first.span.line if first.span else 1))
        for err in errors:
            err.source = text
        raise CompileFailed(errors) from None
    conv = _Converter(path, text)
    program = conv.program(tree)
    if conv.errors:
        for err in conv.errors:
            err.source = text
        raise CompileFailed(conv.errors)
    return program


def _short(text: str) -> str:
    """A value as shown in a message: at most 60 characters."""
    return text if len(text) <= 60 else text[:57] + "..."


def parse_value(text: str, path: str = "<--set>") -> S.Value:
    """Parse a lone value (the right-hand side of a `--set key=value` override) by wrapping it in a fit block."""
    check_size(text, path, "value")
    wrapped = f"fit {{ v = {text}\n}}"
    try:
        tree = parser().parse(wrapped)
    except UnexpectedInput as e:
        col = max(1, min(len(text) + 1, (getattr(e, "column", 11) or 11) - 10))
        raise DlcSyntaxError(f"cannot parse the value {_short(text)!r}", code=E_UNEXPECTED,
                             span=SourceSpan(path, 1, col), source=text,
                             hint='quote text containing spaces or symbols, e.g. "two words"') from None
    conv = _Converter(path, wrapped, col_shift=-10)
    program = conv.program(tree)
    if conv.errors:
        raise conv.errors[0]
    decl = program.statements[0]
    if len(program.statements) != 1 or not isinstance(decl, S.ConfigDecl) or len(decl.body.items) != 1 \
            or not isinstance(decl.body.items[0], S.Setting):
        raise DlcSyntaxError(f"cannot parse the value {_short(text)!r}", code=E_UNEXPECTED, span=SourceSpan(path, 1, 1),
                             source=text)
    return decl.body.items[0].value


# ---------------------------------------------------------------------------------------------------- strings
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "0": "\0"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def decode_string(raw: str) -> tuple[str, int, list[tuple[int, str]]]:
    """Decode a STRING or LONG_STRING token. Returns (text, offset of the text in `raw`, unknown escapes as
    (offset in raw, sequence)).

    A triple-quoted string whose opening quotes end the line is a *block*: the first newline is dropped, the common
    indentation of its non-blank lines is removed and a whitespace-only last line is dropped, so prompts can be
    indented with the file. Otherwise the text is taken verbatim (only escapes are processed)."""
    long = raw.startswith('"""')
    q = 3 if long else 1
    body = raw[q:-q]
    offset = q
    if long and body.startswith("\n"):
        body = body[1:]
        offset += 1
        lines = body.split("\n")
        if lines and lines[-1].strip() == "":
            lines = lines[:-1]
        indents = [len(ln) - len(ln.lstrip(" \t")) for ln in lines if ln.strip()]
        cut = min(indents) if indents else 0
        body = "\n".join(ln[cut:] if ln.strip() else ln.lstrip(" \t") for ln in lines)
    # bad escapes are located in the raw literal (before any dedent), so their positions are exact
    bad = [(m.start(), "\\" + m.group(1)) for m in _ESCAPE_RE.finditer(raw, q, len(raw) - q)
           if not _known_escape(m.group(1))]

    def sub(m: re.Match[str]) -> str:
        seq = m.group(1)
        if seq in _ESCAPES:
            return _ESCAPES[seq]
        if seq.startswith("u") and len(seq) == 5:
            return chr(int(seq[1:], 16))
        return seq

    text = _ESCAPE_RE.sub(sub, body)
    if _SURROGATE_RE.search(text):        # a \uD83D\uDE00 pair written as two escapes is one character
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return text, offset, bad


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _known_escape(seq: str) -> bool:
    return seq in _ESCAPES or (seq.startswith("u") and len(seq) == 5)


def encode_long_string(text: str) -> str:
    """A triple-quoted literal that `decode_string` turns back into exactly `text` (used by rewrite_prompts)."""
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"' and (i + 1 == len(text) or text[i + 1] == '"'):
            out.append('\\"')
        elif ch == "\n" and i == 0:
            out.append("\\n")          # a leading newline would turn the literal into block style
        elif ch == "\r":
            out.append("\\r")
        else:
            out.append(ch)
    return '"""' + "".join(out) + '"""'


def encode_block_string(text: str, indent: str) -> str | None:
    """A readable block-style literal (text on its own lines, indented by `indent` + 2 spaces) that decodes to
    exactly `text`, or None when block style cannot represent it (single line, whitespace-only lines, or a common
    indentation that the block dedent would remove)."""
    lines = text.split("\n")
    if len(lines) < 2 or any(ln.strip() == "" and ln != "" for ln in lines) or lines[-1] == "" or lines[0] == "":
        return None
    if min(len(ln) - len(ln.lstrip(" \t")) for ln in lines if ln.strip()) != 0:
        return None
    body = encode_long_string(text)[3:-3]
    if "\\n" in body.split("\n", 1)[0][:2] or "\r" in text:
        return None
    inner = indent + "  "
    out = '"""\n' + "\n".join(inner + ln if ln else "" for ln in body.split("\n")) + "\n" + indent + '"""'
    return out if decode_string(out)[0] == text else None


# ---------------------------------------------------------------------------------------------------- tree -> syntax
class _Converter:
    def __init__(self, path: str, text: str, col_shift: int = 0) -> None:
        self.path = path
        self.text = text
        self.col_shift = col_shift
        self.errors: list[DlcError] = []

    def tspan(self, tok: Token) -> SourceSpan:
        return SourceSpan(self.path, tok.line, tok.column + self.col_shift, tok.end_line,
                          (tok.end_column or tok.column + 1) + self.col_shift)

    def nspan(self, tree: Tree) -> SourceSpan:
        m = tree.meta
        if getattr(m, "empty", True):
            return SourceSpan(self.path, 1, 1)
        return SourceSpan(self.path, m.line, m.column + self.col_shift, m.end_line, m.end_column + self.col_shift)

    def name(self, tok: Token) -> S.Name:
        return S.Name(str(tok), self.tspan(tok))

    def program(self, tree: Tree) -> S.Program:
        stmts = tuple(self.statement(t) for t in tree.children)
        return S.Program(stmts, self.path, self.text)

    def statement(self, t: Tree) -> S.Statement:
        kind = t.data
        ch = t.children
        span = self.nspan(t)
        if kind == "network":
            return S.NetworkDecl(self.name(ch[0]), span)
        if kind == "inputs":
            return S.InputDecl(tuple(self.name(c) for c in ch), span)
        if kind == "model":
            return S.ModelDecl(self.name(ch[0]), self.body(ch[1]), span)
        if kind == "layer":
            params = ch[1]
            parents = tuple(self.name(c) for c in params.children)
            body = self.body(ch[2]) if len(ch) > 2 else None
            head = SourceSpan(self.path, span.line, span.col, ch[0].end_line, ch[0].end_column + self.col_shift)
            return S.LayerDecl(self.name(ch[0]), parents, body, head)
        if kind == "output":
            body = self.body(ch[1]) if len(ch) > 1 else None
            return S.OutputDecl(self.name(ch[0]), body, SourceSpan(self.path, span.line, span.col,
                                                                   ch[0].end_line, ch[0].end_column))
        if kind in ("data", "fit"):
            return S.ConfigDecl(str(kind), self.body(ch[0]), span)
        raise AssertionError(f"unknown statement {kind}")

    def body(self, t: Tree) -> S.Block:
        items: list[S.Setting | S.Nested] = []
        for c in t.children:
            if isinstance(c, Token):      # LBRACE / RBRACE
                continue
            if c.data == "setting":
                key, value = c.children[0], c.children[1]
                items.append(S.Setting(str(key), self.tspan(key), self.value(value), self.nspan(c)))
            elif c.data == "nested":
                key = c.children[0]
                items.append(S.Nested(str(key), self.tspan(key), self.body(c.children[1])))
        return S.Block(tuple(items), self.nspan(t))

    def value(self, t: Tree | Token, depth: int = 0) -> S.Value:
        assert isinstance(t, Tree), t
        kind = t.data
        ch = t.children
        span = self.nspan(t)
        if depth > MAX_NESTING:
            self.errors.append(DlcSyntaxError(f"values nested more than {MAX_NESTING} deep", code=E_NESTING,
                                              span=SourceSpan(span.path, span.line, span.col, span.line, span.col + 1),
                                              hint="no setting needs lists or maps nested this deep"))
            return S.ListV((), span)       # the value is not converted further (the parse fails with the error)
        if kind == "string":
            return self.string(ch[0])
        if kind == "number":
            txt = str(ch[0])
            if len(txt) > MAX_NUMBER_CHARS:
                self.errors.append(DlcSyntaxError(
                    f"a number of {len(txt):,} characters (at most {MAX_NUMBER_CHARS})", code=E_NUMBER,
                    span=SourceSpan(span.path, span.line, span.col, span.line, span.col + 1),
                    hint="no setting takes a number this long"))
                return S.Num(0, span, "0")
            num: int | float = float(txt) if re.search(r"[.eE]", txt) else int(txt)
            return S.Num(num, span, txt)
        if kind == "true":
            return S.Bool(True, span)
        if kind == "false":
            return S.Bool(False, span)
        if kind == "ident":
            return S.Ident(str(ch[0]), span)
        if kind == "tagged":
            tag = S.Ident(str(ch[0]), self.tspan(ch[0]))
            m = self.value(ch[1], depth + 1)
            assert isinstance(m, S.MapV)
            return S.Tagged(tag, m, span)
        if kind == "file":
            p = self.value(ch[0], depth + 1)
            assert isinstance(p, S.Str)
            return S.FileRef(p, span)
        if kind == "list":
            return S.ListV(tuple(self.value(c, depth + 1) for c in ch), span)
        if kind == "map":
            entries = []
            for e in ch:
                if isinstance(e, Token):
                    continue
                ktok, v = e.children
                key = self.string(ktok).value if ktok.type == "STRING" else str(ktok)
                entries.append(S.Entry(key, self.tspan(ktok), self.value(v, depth + 1)))
            return S.MapV(tuple(entries), span)
        if kind == "alt":
            return S.Alt(tuple(self.value(c, depth + 1) for c in ch), span)
        raise AssertionError(f"unknown value {kind}")

    def string(self, tok: Token) -> S.Str:
        raw = str(tok)
        text, offset, bad = decode_string(raw)
        if _SURROGATE_RE.search(text):       # left after decode_string joined the escaped pairs: a lone one
            at = next((m.start() for m in _ESCAPE_RE.finditer(raw) if m.group(1)[:2].lower() == "ud"
                       and m.group(1)[2:3].lower() in "89abcdef" and len(m.group(1)) == 5), 0)
            line, col = _advance(tok.line, tok.column, raw[:at])
            self.errors.append(DlcSyntaxError(
                "a lone UTF-16 surrogate (U+D800..U+DFFF) in a string: it is not a character", code=E_SURROGATE,
                span=SourceSpan(self.path, line, col + self.col_shift, line, col + self.col_shift + 6),
                hint="write the character itself, or a \\uXXXX pair (high \\uD800-\\uDBFF then low "
                     "\\uDC00-\\uDFFF)"))
        for off, seq in bad:
            line, col = _advance(tok.line, tok.column, raw[:off])
            self.errors.append(DlcSyntaxError(
                f"unknown escape sequence '{seq}' in a string", code=E_ESCAPE,
                span=SourceSpan(self.path, line, col + self.col_shift, line, col + self.col_shift + len(seq)),
                hint="escapes are \\n \\t \\\" \\\\ \\uXXXX; write \\\\ for a backslash"))
        cline, ccol = _advance(tok.line, tok.column, raw[:offset])
        return S.Str(text, self.tspan(tok), long=raw.startswith('"""'), content_line=cline,
                     content_col=ccol + self.col_shift)


def _advance(line: int, col: int, consumed: str) -> tuple[int, int]:
    """Position after `consumed` when it starts at (line, col)."""
    nl = consumed.count("\n")
    if nl:
        return line + nl, len(consumed) - consumed.rfind("\n")
    return line, col + len(consumed)


# ---------------------------------------------------------------------------------------------------- friendly errors
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


_STATEMENT_LINE_RE = re.compile(r"^([A-Za-z_]\w*)\b(?![ \t]*[=:])", re.M)
_STRING_RE = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"', re.S)


def _statement_starts(text: str) -> list[int]:
    """Offsets of lines that start with a statement keyword, outside string literals."""
    inside = [(m.start(), m.end()) for m in _STRING_RE.finditer(text)]
    return [m.start() for m in _STATEMENT_LINE_RE.finditer(text)
            if (m.group(1) in STATEMENT_KEYWORDS or did_you_mean(m.group(1), STATEMENT_KEYWORDS))
            and not any(a < m.start() < b for a, b in inside)]


def _later_errors(text: str, path: str, after_line: int) -> list[DlcSyntaxError]:
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
            errors.append(_friendly(e, chunk, path))
    return errors


def _friendly(e: UnexpectedInput, text: str, path: str) -> DlcSyntaxError:
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


__all__ = ["parse", "parse_value", "parser", "decode_string", "encode_long_string", "encode_block_string",
           "STATEMENT_KEYWORDS"]

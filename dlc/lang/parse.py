"""`.dln` text -> `syntax.Program`: the LALR parse of grammar/dln.lark, and the one boundary where Lark's exceptions
become `DlcSyntaxError`s with a span and a friendly message (style guide: wrap each third-party library once; the
messages are written by `dlc.lang.syntax_errors`, the statements after the first error are checked by
`dlc.lang.recovery`).

The parse tree is converted by a plain recursive function rather than a Lark Transformer, so that an error found
while converting (a bad escape in a string) is a normal DlcError and never a `VisitError`.
"""
from __future__ import annotations

import functools
import re

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from dlc.lang import syntax as S
from dlc.lang.syntax_errors import (E_ESCAPE, E_NESTING, E_NUMBER, E_SIZE, E_SURROGATE, E_UNEXPECTED,
                                    STATEMENT_KEYWORDS, friendly)
from dlc.errors import CompileFailed, DlcError, DlcSyntaxError, SourceSpan
from dlc.resources import grammar_dir

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
        from dlc.lang.recovery import later_syntax_errors

        first = friendly(e, text, path)
        errors = [first] + later_syntax_errors(text, path, getattr(e, "line", first.span.line if first.span else 1))
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


__all__ = ["parse", "parse_value", "parser", "decode_string", "encode_long_string", "encode_block_string",
           "STATEMENT_KEYWORDS"]

"""What the user wrote: frozen dataclasses mirroring the rules of grammar/dln.lark, each carrying its SourceSpan.

This layer is deliberately untyped with respect to the schema (a `Setting` holds any `Value`): the checker
(`dlc.lang.check`) decides what each key means, so a wrong type or an unknown key is reported with a precise span and a
hint instead of an opaque parse error (the "generic syntax, schema-driven checks" design of HCL).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from dlc.errors import SourceSpan


# ---------------------------------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Str:
    value: str
    span: SourceSpan
    long: bool = False            # written as a """triple-quoted""" string
    content_line: int = 0         # 1-based line/col where the string's text starts (for inline templates)
    content_col: int = 0


@dataclass(frozen=True)
class Num:
    value: int | float
    span: SourceSpan
    text: str = ""


@dataclass(frozen=True)
class Bool:
    value: bool
    span: SourceSpan


@dataclass(frozen=True)
class Ident:
    name: str
    span: SourceSpan


@dataclass(frozen=True)
class FileRef:
    path: Str
    span: SourceSpan


@dataclass(frozen=True)
class ListV:
    items: tuple["Value", ...]
    span: SourceSpan


@dataclass(frozen=True)
class Entry:
    key: str
    key_span: SourceSpan
    value: "Value"


@dataclass(frozen=True)
class MapV:
    entries: tuple[Entry, ...]
    span: SourceSpan


@dataclass(frozen=True)
class Alt:
    """`"a" | "b"`: several alternatives (verbalizers of a label)."""

    options: tuple["Value", ...]
    span: SourceSpan


@dataclass(frozen=True)
class Tagged:
    """`choice { yes: "yes" | "Yes" }`: an identifier qualified by a map."""

    tag: Ident
    map: MapV
    span: SourceSpan


Value = Union[Str, Num, Bool, Ident, FileRef, ListV, MapV, Alt, Tagged]


# ---------------------------------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Setting:
    key: str
    key_span: SourceSpan
    value: Value
    span: SourceSpan              # the whole `key = value`


@dataclass(frozen=True)
class Block:
    """`{ ... }` body: settings and nested blocks (`backward { ... }`) in source order."""

    items: tuple["Setting | Nested", ...]
    span: SourceSpan              # from `{` to `}`


@dataclass(frozen=True)
class Nested:
    name: str
    name_span: SourceSpan
    body: Block


# ---------------------------------------------------------------------------------------------------- statements
@dataclass(frozen=True)
class Name:
    name: str
    span: SourceSpan


@dataclass(frozen=True)
class NetworkDecl:
    name: Name
    span: SourceSpan


@dataclass(frozen=True)
class InputDecl:
    names: tuple[Name, ...]
    span: SourceSpan


@dataclass(frozen=True)
class ModelDecl:
    name: Name
    body: Block
    span: SourceSpan


@dataclass(frozen=True)
class LayerDecl:
    name: Name
    parents: tuple[Name, ...]
    body: Block | None
    span: SourceSpan              # the header `layer h(x)`


@dataclass(frozen=True)
class OutputDecl:
    layer: Name
    body: Block | None
    span: SourceSpan


@dataclass(frozen=True)
class ConfigDecl:
    """`data { ... }` or `fit { ... }`."""

    kind: str
    body: Block
    span: SourceSpan


Statement = Union[NetworkDecl, InputDecl, ModelDecl, LayerDecl, OutputDecl, ConfigDecl]


@dataclass(frozen=True)
class Program:
    statements: tuple[Statement, ...]
    path: str
    text: str

    def of_type(self, cls: type) -> list:
        return [s for s in self.statements if isinstance(s, cls)]


def describe(value: Value) -> str:
    """A short human name of a value's type, for 'expected X, got Y' messages."""
    return {Str: "a string", Num: "a number", Bool: "a boolean", Ident: "a name", FileRef: "a file reference",
            ListV: "a list", MapV: "a map", Alt: "alternatives (a | b)", Tagged: "a qualified map"}[type(value)]


def spans_union(a: SourceSpan, b: SourceSpan) -> SourceSpan:
    return SourceSpan(a.path, a.line, a.col, b.end_line, b.end_col)

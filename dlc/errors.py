"""User-facing errors: one small hierarchy, stable codes, and a compiler-style renderer.

Every mistake a user can make is a `DlcError` with a stable code (`E2xx` syntax, `E3xx` semantic, ...). Errors that
point into a `.dln` (or template) file carry a `SourceSpan` and render as

    path:line:col: error[E301]: unknown template 'clasify'
       |
     7 |   template = clasify
       |              ^^^^^^^
    hint: did you mean 'classify'?

Anything else renders as one line with a hint. Bugs are not DlcErrors: they are asserts/RuntimeErrors and the CLI
reports them with exit status 3 (pre-commit's policy).

Code ranges:
    E1xx usage (CLI arguments, --set overrides, config)      E5xx artifacts (manifest, run directory, cache)
    E2xx syntax (.dln parse)                                 E6xx LLM backends (transport, model files, capability)
    E3xx semantics (names, types, settings); E35x templates  E7xx fitting (numerics, budget, data)
    E4xx graph structure (cycles, unreachable, no output)    E8xx data (datasets, splits, field mapping)
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence


@dataclass(frozen=True)
class SourceSpan:
    """A 1-based, end-inclusive-line / end-exclusive-column region of a source file."""

    path: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "col": self.col,
                "end_line": self.end_line, "end_col": self.end_col}


class DlcError(Exception):
    """Base class of every error caused by user input; the CLI prints it and exits with status 1."""

    code: str = "E000"

    def __init__(self, message: str, *, code: str | None = None, span: SourceSpan | None = None,
                 hint: str | None = None, node: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.span = span
        self.hint = hint
        self.node = node
        self.source = source  # full text of span.path when it is not readable from disk (inline/in-memory)

    def with_node(self, node: str) -> "DlcError":
        """Attach the graph node the error happened in (dbt's add_node), keeping an existing one."""
        if self.node is None:
            self.node = node
        return self

    def render(self, source_text: str | None = None) -> str:
        return render_error(self, source_text)

    def __str__(self) -> str:
        if self.span is not None:
            return f"{self.span.path}:{self.span.line}:{self.span.col}: error[{self.code}]: {self.message}"
        return f"error[{self.code}]: {self.message}"


class DlcUsageError(DlcError):
    code = "E100"


class DlcSyntaxError(DlcError):
    code = "E200"


class DlcSemanticError(DlcError):
    code = "E300"


class DlcTemplateError(DlcSemanticError):
    code = "E350"


class DlcGraphError(DlcError):
    code = "E400"


class DlcArtifactError(DlcError):
    code = "E500"


class DlcLMError(DlcError):
    code = "E600"

    def __init__(self, message: str, *, retryable: bool = False, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retryable = retryable


class DlcFitError(DlcError):
    code = "E700"


class DlcDataError(DlcError):
    code = "E800"


class CompileFailed(DlcError):
    """Several errors of one file, reported together (the compiler never stops at the first one)."""

    code = "E300"

    def __init__(self, errors: Sequence[DlcError]) -> None:
        errors = sorted(errors, key=_sort_key)
        first = errors[0] if errors else None
        super().__init__(f"{len(errors)} error(s)", code=first.code if first else "E300",
                         span=first.span if first else None)
        self.errors: list[DlcError] = list(errors)

    def render(self, source_text: str | None = None) -> str:
        parts = [render_error(e, source_text if (e.span and first_path(self) == e.span.path) else None)
                 for e in self.errors]
        n = len(self.errors)
        parts.append(f"{n} error{'s' if n != 1 else ''} found")
        return "\n".join(parts)


def first_path(err: CompileFailed) -> str | None:
    return err.errors[0].span.path if err.errors and err.errors[0].span else None


def _sort_key(e: DlcError) -> tuple[str, int, int, str]:
    if e.span is None:
        return ("~", 0, 0, e.code)
    return (e.span.path, e.span.line, e.span.col, e.code)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """`hint` text for a misspelt name, or None when nothing is close."""
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


def render_error(err: DlcError, source_text: str | None = None) -> str:
    """Render an error as `path:line:col: error[Ennn]: message`, the source line with carets, and a hint."""
    if isinstance(err, CompileFailed):
        return err.render(source_text)
    lines = [str(err)]
    span = err.span
    if span is not None:
        text = source_text if source_text is not None else err.source
        if text is None:
            try:
                text = Path(span.path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = None
        if text is not None:
            src_lines = text.splitlines()
            if 1 <= span.line <= len(src_lines):
                src = src_lines[span.line - 1].expandtabs(1)
                width = 1
                if span.end_line == span.line and span.end_col is not None and span.end_col > span.col:
                    width = span.end_col - span.col
                width = max(1, min(width, max(1, len(src) - span.col + 1)))
                gutter = " " * len(str(span.line))
                lines.append(f"{gutter} |")
                lines.append(f"{span.line} | {src}")
                lines.append(f"{gutter} | {' ' * (span.col - 1)}{'^' * width}")
    if err.node:
        lines.append(f"  in node {err.node}")
    if err.hint:
        lines.append(f"hint: {err.hint}")
    return "\n".join(lines)


__all__ = [
    "SourceSpan", "DlcError", "DlcUsageError", "DlcSyntaxError", "DlcSemanticError", "DlcTemplateError",
    "DlcGraphError", "DlcArtifactError", "DlcLMError", "DlcFitError", "DlcDataError", "CompileFailed",
    "did_you_mean", "render_error", "replace", "field",
]

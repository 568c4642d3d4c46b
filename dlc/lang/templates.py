"""The one Jinja environment of dlc: sandboxed, StrictUndefined, and never fed dataset text as template source.

Dataset text (inputs, labels, hidden texts) only ever arrives as a *variable* of `render`; template source comes
from the built-in library (`templates/`), a file next to the `.dln`, or an inline string in the `.dln` itself.
Backward templates may carry their meta-instruction pool in a leading comment:

    {#- messages:
    - Clarify the instruction by adding a few words.
    - Shorten the instruction.
    -#}
"""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any, Mapping

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dlc.errors import DlcTemplateError, SourceSpan
from dlc.resources import templates_dir

# Template kinds map to sub-directories of the library: forward/<name>.j2, backward/prompt_<name>.j2 ...
KIND_DIRS = {"forward": "forward", "prompt": "backward", "posterior": "backward"}
KIND_PREFIX = {"forward": "", "prompt": "prompt_", "posterior": "hidden_"}

_MESSAGES_RE = re.compile(r"\A\s*\{#-?\s*messages:\s*\n(?P<body>.*?)-?#\}", re.S)


@functools.lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                         autoescape=False, trim_blocks=True, lstrip_blocks=True)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def builtin_names(kind: str) -> list[str]:
    """Names of the built-in templates of a kind (`forward`, `prompt`, `posterior`), as the DSL spells them."""
    d = templates_dir() / KIND_DIRS[kind]
    prefix = KIND_PREFIX[kind]
    return sorted(p.stem[len(prefix):] for p in d.glob(f"{prefix}*.j2"))


def builtin_path(kind: str, name: str) -> Path:
    return templates_dir() / KIND_DIRS[kind] / f"{KIND_PREFIX[kind]}{name}.j2"


def messages(source: str) -> list[str]:
    """The meta-instruction pool declared at the top of a template ([] when it declares none)."""
    m = _MESSAGES_RE.match(source)
    if not m:
        return []
    out = []
    for line in m.group("body").splitlines():
        line = line.strip()
        if line.startswith("- "):
            out.append(line[2:].strip())
    return out


def parse(source: str, *, path: str = "<template>", line_offset: int = 0, col_offset: int = 0) -> jinja2.nodes.Template:
    """Parse template source; a Jinja syntax error becomes E351 pointing into the template (file or inline)."""
    try:
        return environment().parse(source)
    except jinja2.TemplateSyntaxError as e:
        line = (e.lineno or 1) + line_offset
        col = 1 + (col_offset if (e.lineno or 1) == 1 else 0)
        raise DlcTemplateError(f"template syntax error: {e.message}", code="E351",
                               span=SourceSpan(path, line, col),
                               hint="check the {{ }} / {% %} pairs of the template") from e


def undeclared(source: str, **kw: Any) -> set[str]:
    """Variables the template reads (statically, via jinja2.meta)."""
    return set(meta.find_undeclared_variables(parse(source, **kw)))


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    return environment().from_string(source)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render template *source* with *variables* (the only way dataset text enters a prompt)."""
    try:
        return _compiled(source).render(**variables).strip()
    except jinja2.UndefinedError as e:
        raise DlcTemplateError(f"template needs a variable it was not given: {e.message}", code="E352") from e
    except jinja2.TemplateError as e:
        raise DlcTemplateError(f"template failed to render: {e}", code="E353") from e

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

import contextvars
import functools
import hashlib
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from dlc.errors import DlcTemplateError, SourceSpan
from dlc.resources import templates_dir

# Template kinds map to sub-directories of the library: forward/<name>.j2, backward/prompt_<name>.j2 ...
KIND_DIRS = {"forward": "forward", "prompt": "backward", "posterior": "backward"}
KIND_PREFIX = {"forward": "", "prompt": "prompt_", "posterior": "hidden_"}

_MESSAGES_RE = re.compile(r"\A\s*\{#-?\s*messages:\s*\n(?P<body>.*?)-?#\}", re.S)


# ------------------------------------------------------------------------------------------------ render bounds
# A template is code: besides the sandbox (no attribute escapes, no mutation of lists/dicts) its rendering is bounded,
# so a template that compiles can neither hang nor exhaust memory at render time. Every bound is an E359 naming the
# template's layer (the caller attaches it):
#   - the rendered text: at most MAX_RENDER_CHARS characters (streamed: the render stops when it gets there);
#   - work: MAX_RENDER_STEPS loop iterations + calls (macros, methods, range) + filters + operators per render;
#   - sizes: a string or list made by `*`, `+`, `~`, `%` or a filter, or returned by a call, is at most
#     MAX_RENDER_CHARS long, checked before it is made where the size is known in advance (`"a" * 10**9`); an integer
#     argument of a call or filter above MAX_RENDER_CHARS (`center(10**9)`, `range(10**9)`) is refused; `x ** y` at
#     most MAX_POW_BITS bits;
#   - recursion (a recursive macro) and memory errors are E359 too, never a traceback.
# Tags that need a template loader (include, import, extends) and the non-reproducible `lipsum` / `random` are refused
# when the network is compiled (E358).
MAX_RENDER_CHARS = 2_000_000
MAX_RENDER_STEPS = 250_000
MAX_POW_BITS = 100_000
_ITER, _CONCAT = "_dlc_bounded_iter", "_dlc_bounded_concat"
_LOADER_TAGS = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import",
                nodes.Extends: "extends"}
_BANNED_GLOBALS = {"lipsum": "random placeholder text (not reproducible, unbounded)"}
_BANNED_FILTERS = {"random": "a random choice (not reproducible: a fit must give the same prompt for the same seed)"}


class _Budget:
    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("dlc_template_budget", default=None)


def _bound_error(what: str) -> DlcTemplateError:
    return DlcTemplateError(f"template rendering stopped: {what}", code="E359",
                            hint="a template may loop, recurse and build text only within fixed bounds "
                                 f"({MAX_RENDER_CHARS:,} characters, {MAX_RENDER_STEPS:,} steps); simplify it")


def _step(n: int = 1) -> None:
    b = _BUDGET.get()
    if b is not None:
        b.steps += n
        if b.steps > MAX_RENDER_STEPS:
            raise _bound_error(f"more than {MAX_RENDER_STEPS:,} steps (loop iterations, calls, filters, operators)")


def _size(v: Any) -> int:
    return len(v) if isinstance(v, (str, bytes, list, tuple, dict, set, frozenset)) else 0


def _check_size(v: Any, what: str) -> Any:
    if _size(v) > MAX_RENDER_CHARS:
        raise _bound_error(f"{what} made a value of {_size(v):,} items/characters (limit {MAX_RENDER_CHARS:,})")
    return v


def _check_int_args(args: Any, what: str) -> None:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_RENDER_CHARS:
            raise _bound_error(f"{what} was given {a if abs(a) < 10**30 else 'a number of %d digits' % len(str(abs(a)))}"
                               f", over the bound {MAX_RENDER_CHARS:,}")


_PERCENT_WIDTH = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*?:[^{}]*?(\d+)")


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    """Every `{% for %}` iterates through this (the template's AST is rewritten at compile time): one step each."""
    for item in iterable:
        _step()
        yield item


def _bounded_concat(*parts: Any) -> str:
    """`a ~ b ~ c` (rewritten at compile time): the joined length is checked before the string is made."""
    texts = [str(p) for p in parts]
    total = sum(len(t) for t in texts)
    if total > MAX_RENDER_CHARS:
        raise _bound_error(f"'~' would make {total:,} characters (limit {MAX_RENDER_CHARS:,})")
    return "".join(texts)


class _Rewrite(NodeTransformer):
    """Route every `{% for %}` iterable through _bounded_iter and every `~` through _bounded_concat."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = nodes.Call(nodes.Name(_ITER, "load", lineno=node.iter.lineno), [node.iter], [], None, None,
                               lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Call(nodes.Name(_CONCAT, "load", lineno=node.lineno), list(node.nodes), [], None, None,
                          lineno=node.lineno)


def _bounded_filter(name: str, f: Any) -> Any:
    skip = 2 if getattr(f, "jinja_pass_arg", None) is not None else 1   # (context/env,) value, then the arguments

    @functools.wraps(f)                     # keeps jinja_pass_arg (pass_context ...), which Jinja reads
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        _check_int_args(list(args[skip:]) + list(kwargs.values()), f"the filter '{name}'")
        return _check_size(f(*args, **kwargs), f"the filter '{name}'")

    return bounded


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox with dlc's render bounds (see above)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        for name in _BANNED_GLOBALS:
            self.globals.pop(name, None)
        for name in _BANNED_FILTERS:
            self.filters.pop(name, None)
        self.filters = {k: _bounded_filter(k, f) for k, f in self.filters.items()}
        self.globals[_ITER] = _bounded_iter
        self.globals[_CONCAT] = _bounded_concat

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        source = _Rewrite().visit(source)
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init=defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) and isinstance(n, int) and not isinstance(n, bool) and _size(seq) * n > MAX_RENDER_CHARS:
                    raise _bound_error(f"'*' would make {_size(seq) * n:,} items/characters "
                                       f"(limit {MAX_RENDER_CHARS:,})")
        elif operator == "+":
            if _size(left) + _size(right) > MAX_RENDER_CHARS:
                raise _bound_error(f"'+' would make {_size(left) + _size(right):,} items/characters "
                                   f"(limit {MAX_RENDER_CHARS:,})")
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
                    and right * max(1, abs(left).bit_length()) > MAX_POW_BITS):
                raise _bound_error(f"'**' would make a number of about {right * abs(left).bit_length():,} bits "
                                   f"(limit {MAX_POW_BITS:,})")
        elif operator == "%" and isinstance(left, str):
            args = right if isinstance(right, tuple) else (right,)
            for m in _PERCENT_WIDTH.finditer(left):
                for g in m.groups():
                    if g == "*":
                        _check_int_args(args, "'%' formatting")
                    elif g is not None and len(g) > 7 or (g is not None and g.isdigit() and int(g) > MAX_RENDER_CHARS):
                        raise _bound_error(f"'%' formatting asks for a width of {g[:20]}"
                                           f"{'...' if len(g) > 20 else ''} (limit {MAX_RENDER_CHARS:,})")
        return _check_size(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        _step()
        if __obj is not _bounded_iter and __obj is not _bounded_concat:
            what = f"the call of {getattr(__obj, '__name__', None) or type(__obj).__name__}"
            _check_int_args(list(args) + list(kwargs.values()), what)
            fmt = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)   # the sandbox wraps str.format
            if isinstance(fmt, str) and getattr(__obj, "__name__", "") in ("format", "format_map"):
                for m in _FORMAT_WIDTH.finditer(fmt):
                    if len(m.group(1)) > 7 or int(m.group(1)) > MAX_RENDER_CHARS:
                        raise _bound_error(f"str.format asks for a width of {m.group(1)[:20]} "
                                           f"(limit {MAX_RENDER_CHARS:,})")
        else:
            what = "a template expression"
        return _check_size(super().call(__context, __obj, *args, **kwargs), what)


def _check_tree(tree: nodes.Template, path: str, line_offset: int, col_offset: int) -> None:
    """E358 for what compiles in Jinja but cannot work (or be reproducible) in dlc: tags that need a template loader
    (dlc has none: a template is one self-contained text), `lipsum` and the `random` filter."""
    def fail(node: nodes.Node, message: str, hint: str) -> None:
        line = (node.lineno or 1) + line_offset
        raise DlcTemplateError(message, code="E358", span=SourceSpan(path, line, 1 + (col_offset if
                                                                                         (node.lineno or 1) == 1 else 0)),
                               hint=hint)

    for cls, tag in _LOADER_TAGS.items():
        for node in tree.find_all(cls):
            fail(node, f"`{{% {tag} %}}` is not available in dlc templates (there is no template loader)",
                 "a template is one self-contained text: copy the part you need into it, or use a {% macro %}")
    for node in tree.find_all(nodes.Name):
        if node.name in _BANNED_GLOBALS:
            fail(node, f"'{node.name}' is not available in dlc templates: {_BANNED_GLOBALS[node.name]}",
                 "write the text into the template")
    for node in tree.find_all(nodes.Filter):
        if node.name in _BANNED_FILTERS:
            fail(node, f"the filter '{node.name}' is not available in dlc templates: {_BANNED_FILTERS[node.name]}",
                 "choose deterministically (e.g. by index), or let the optimizer propose variants")


@functools.lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return _Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False,
                        trim_blocks=True, lstrip_blocks=True)


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
        tree = environment().parse(source)
        _check_tree(tree, path, line_offset, col_offset)
        _compiled(source)           # code generation errors (unknown filter or test ...) now, not at render time
        return tree
    except jinja2.TemplateSyntaxError as e:
        line = (e.lineno or 1) + line_offset
        col = 1 + (col_offset if (e.lineno or 1) == 1 else 0)
        raise DlcTemplateError(f"template syntax error: {e.message}", code="E351",
                               span=SourceSpan(path, line, col),
                               hint="check the {{ }} / {% %} pairs of the template") from e
    except RecursionError:
        raise DlcTemplateError("template syntax error: expressions nested too deeply", code="E351",
                               span=SourceSpan(path, 1 + line_offset, 1 + col_offset),
                               hint="flatten the template's expressions") from None


def undeclared(source: str, **kw: Any) -> set[str]:
    """Variables the template reads (statically, via jinja2.meta)."""
    return set(meta.find_undeclared_variables(parse(source, **kw)))


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    return environment().from_string(source)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render template *source* with *variables* (the only way dataset text enters a prompt), within the render
    bounds (E359); any other failure of the template's code is E353, never a traceback."""
    token = _BUDGET.set(_Budget())
    try:
        out: list[str] = []
        n = 0
        for chunk in _compiled(source).generate(**variables):
            n += len(chunk)
            if n > MAX_RENDER_CHARS:
                raise _bound_error(f"the rendered text is over {MAX_RENDER_CHARS:,} characters")
            out.append(chunk)
        return "".join(out).strip()
    except DlcTemplateError:
        raise
    except jinja2.UndefinedError as e:
        raise DlcTemplateError(f"template needs a variable it was not given: {e.message}", code="E352") from e
    except jinja2.TemplateError as e:
        raise DlcTemplateError(f"template failed to render: {e}", code="E353") from e
    except RecursionError:
        raise _bound_error("recursion too deep (a macro that calls itself without end?)") from None
    except MemoryError:
        raise _bound_error("out of memory while rendering") from None
    except OverflowError as e:
        raise _bound_error(f"a number or range too large ({e})") from None
    except Exception as e:  # noqa: BLE001 (the template's own code failed: 1/0, "a" - 1, ...)
        raise DlcTemplateError(f"template failed to render: {type(e).__name__}: {e}", code="E353") from None
    finally:
        _BUDGET.reset(token)

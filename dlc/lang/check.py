"""Semantic checks: the coercer of every block key (derived from `dlc.lang.schema`), value coercion with spans, and
the graph-level rules.

The grammar is generic (`key = value`); a key gets its meaning from its `ir.setting` field, checked here. Every
check *records* an error and returns a sentinel instead of raising, so one compile reports all mistakes of a file at
once (`CompileFailed`). Error codes (E3xx semantics, E35x templates, E4xx graph structure):

    E301 unknown template            E310 wrong type                 E320 duplicate label
    E302 unknown node name           E311 value out of range         E321 verbalizer used by two labels
    E303 duplicate name              E312 unknown key                E322 empty label / verbalizer
    E304 unknown model               E313 key set twice              E323 bad posterior mixture weights
    E305 reserved name               E314 not one of the allowed     E324 bad parent list
                                     E315 literal secret / bad env   E325 choice without labels
                                                                     E326 openai model without `model`
                                                                     E327 labels differ from the task's
    E351 template syntax error       E354 template variable the layer cannot supply
    E355 template file not found
    E401 cycle   E402 layer reaches no output   E403 no output   E404 output is not a layer
    E405 several outputs
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping

import networkx as nx

from dlc import ir
from dlc.lang import syntax as S
from dlc.errors import DlcError, DlcGraphError, DlcSemanticError, DlcTemplateError, SourceSpan, did_you_mean
from dlc.lang.schema import Key, keys, out_of_range


class _Invalid:
    """Returned by a coercer that recorded an error (so callers fall back to the default and keep checking)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()

# Names the template contract gives a meaning to (dlc/ir.py); a node may not shadow them.
RESERVED = frozenset({"prompt", "input", "hidden", "inputs", "parents", "forward", "output", "target",
                      "next_prompt", "message", "successes", "errors", "loop", "range", "true", "false", "none",
                      "self"})
FORWARD_VARS = frozenset({"prompt", "input", "hidden", "inputs", "parents"})
POSTERIOR_VARS = frozenset({"forward", "output", "target", "next_prompt", "message"})
PROMPT_VARS = frozenset({"prompt", "successes", "errors", "message"})
IMPLICIT_MODELS = ("tiny", "small", "default")
# keys that exist, but in another block: a better hint than a list of keys
MISPLACED = {
    "posterior": "posterior is a backward setting: backward { posterior = { prior_answer: 0.5, prior: 0.5 } }",
    "backend": "backend belongs in a model block: model NAME { backend = openai ... }, then model = NAME",
    "base_url_env": "base_url_env belongs in a model block: model NAME { ... }",
    "api_key_env": "api_key_env belongs in a model block: model NAME { ... }",
    "iters": "training options go in the fit block: fit { iters = 5 }",
    "batch_size": "training options go in the fit block: fit { batch_size = 10 }",
    "task": "the dataset goes in the data block: data { task = \"subj\" }",
    "metric": "the metric is set on the output: output y { metric = accuracy }",
}
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")   # \Z: "$" would accept a trailing newline


class Checker:
    """Collects errors; its coercers turn a `syntax.Value` into a Python value or INVALID."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.source_text = text
        self.sources: dict[str, str] = {}      # text of other "files" errors may point into (--set overrides)
        self.errors: list[DlcError] = []

    # -------------------------------------------------------------------------------------------- reporting
    def error(self, code: str, message: str, span: SourceSpan | None, hint: str | None = None,
              node: str | None = None, cls: type[DlcError] = DlcSemanticError, source: str | None = None) -> Any:
        err = cls(message, code=code, span=span, hint=hint, node=node)
        if source is None and span is not None and span.path != self.path:
            source = self.sources.get(span.path)
        err.source = source if source is not None else (self.source_text if span is None or span.path == self.path
                                                         else None)
        self.errors.append(err)
        return INVALID

    def add(self, err: DlcError) -> Any:
        if err.source is None and err.span is not None and err.span.path == self.path:
            err.source = self.source_text
        self.errors.append(err)
        return INVALID

    def type_error(self, v: S.Value, expected: str, key: str, hint: str | None = None) -> Any:
        return self.error("E310", f"'{key}' expects {expected}, got {S.describe(v)}", v.span, hint=hint)

    # -------------------------------------------------------------------------------------------- coercers
    def text(self, v: S.Value, key: str) -> Any:
        """A string; a bare name is accepted as its text (so `--set layer.h.prompt=Think` works)."""
        if isinstance(v, S.Str):
            return v.value
        if isinstance(v, S.Ident):
            return v.name
        if isinstance(v, (S.Num, S.Bool)) and v.span.path.startswith("--set "):
            # `--set layer.h.prompt=42`: on the command line there are no quotes to tell text from a number
            return v.text if isinstance(v, S.Num) else ("true" if v.value else "false")
        return self.type_error(v, "a string", key, hint='quote text: "..."')

    def name(self, v: S.Value, key: str) -> Any:
        if isinstance(v, S.Ident):
            return v.name
        if isinstance(v, S.Str) and ENV_NAME_RE.match(v.value):
            return v.value
        return self.type_error(v, "a name", key)

    def integer(self, v: S.Value, key: str, lo: int | None = None, hi: int | None = None) -> Any:
        if not isinstance(v, S.Num) or isinstance(v.value, float):
            return self.type_error(v, "an integer", key)
        return self._range(v, v.value, key, lo, hi)

    def number(self, v: S.Value, key: str, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> Any:
        if not isinstance(v, S.Num):
            return self.type_error(v, "a number", key)
        return self._range(v, float(v.value), key, lo, hi, lo_open)

    def _range(self, v: S.Num, x: float, key: str, lo: float | None, hi: float | None, lo_open: bool = False
               ) -> Any:
        problem = out_of_range(x, (lo, hi, lo_open), shown=str(v.value))
        return x if problem is None else self.error("E311", f"'{key}' {problem}", v.span)

    def boolean(self, v: S.Value, key: str) -> Any:
        if isinstance(v, S.Bool):
            return v.value
        return self.type_error(v, "true or false", key)

    def choice(self, v: S.Value, key: str, allowed: Iterable[str]) -> Any:
        allowed = tuple(allowed)
        if isinstance(v, (S.Ident, S.Str)):
            word = v.name if isinstance(v, S.Ident) else v.value
            if word in allowed:
                return word
            hint = did_you_mean(word, allowed) or f"one of: {', '.join(allowed)}"
            return self.error("E314", f"'{key}' must be one of {', '.join(allowed)}; got '{word}'", v.span,
                              hint=hint)
        return self.type_error(v, f"one of {', '.join(allowed)}", key)

    def text_list(self, v: S.Value, key: str) -> Any:
        """A string or a list of strings (stop sequences)."""
        items = v.items if isinstance(v, S.ListV) else (v,)
        out = []
        for it in items:
            t = self.text(it, key)
            if t is INVALID:
                return INVALID
            out.append(t)
        return tuple(out)

    def name_list(self, v: S.Value, key: str) -> Any:
        items = v.items if isinstance(v, S.ListV) else (v,)
        out = []
        for it in items:
            t = self.name(it, key)
            if t is INVALID:
                return INVALID
            out.append((t, it.span))
        return tuple(out)

    # -------------------------------------------------------------------------------------------- blocks
    def settings(self, block: S.Block | None, schema: Mapping[str, Callable[[S.Value, str], Any]],
                 where: str, nested: Iterable[str] = ()) -> tuple[dict[str, Any], dict[str, S.Setting],
                                                                   dict[str, S.Nested]]:
        """Coerce every setting of a block by its schema. Returns (values, settings by key, nested blocks)."""
        values: dict[str, Any] = {}
        seen: dict[str, S.Setting] = {}
        blocks: dict[str, S.Nested] = {}
        if block is None:
            return values, seen, blocks
        nested = tuple(nested)
        for item in block.items:
            if isinstance(item, S.Nested):
                if item.name not in nested:
                    hint = did_you_mean(item.name, nested) or (
                        f"'{item.name}' is not a block here" + (f"; blocks: {', '.join(nested)}" if nested else ""))
                    if item.name in schema:
                        hint = f"write `{item.name} = ...`"
                    self.error("E312", f"unknown block '{item.name}' in {where}", item.name_span, hint=hint)
                    continue
                if item.name in blocks:
                    self.error("E313", f"block '{item.name}' appears twice in {where}", item.name_span,
                               hint="merge the two blocks")
                    continue
                blocks[item.name] = item
                continue
            if item.key not in schema:
                hint = did_you_mean(item.key, list(schema) + list(nested)) or \
                    f"keys of {where}: {', '.join(sorted(schema))}"
                if item.key in MISPLACED:
                    hint = MISPLACED[item.key]
                if item.key in nested:
                    hint = f"write `{item.key} {{ ... }}` (a block, without '=')"
                self.error("E312", f"unknown key '{item.key}' in {where}", item.key_span, hint=hint)
                continue
            if item.key in seen:
                first = seen[item.key].key_span
                self.error("E313", f"'{item.key}' is set twice in {where} (first on line {first.line})",
                           item.key_span, hint="remove one of them")
                continue
            seen[item.key] = item
            values[item.key] = schema[item.key](item.value, item.key)
        return values, seen, blocks


# -------------------------------------------------------------------------------------------------------- schemas
def schema(ck: Checker, block: str) -> dict[str, Callable[[S.Value, str], Any]]:
    """The coercer of every key of a block, derived from its IR fields (`dlc.lang.schema`): a new setting is checked
    for free. `raw` keys are kept as syntax and resolved by the compiler (they need names, labels or files)."""
    return {k.key: _coercer(ck, k) for k in keys(block).values()}


def _coercer(ck: Checker, k: Key) -> Callable[[S.Value, str], Any]:
    lo, hi, lo_open = k.range or (None, None, False)
    return {
        "bool": ck.boolean,
        "int": lambda v, key: ck.integer(v, key, lo, hi),       # type: ignore[arg-type]
        "number": lambda v, key: ck.number(v, key, lo, hi, lo_open=lo_open),
        "choice": lambda v, key: ck.choice(v, key, k.allowed),
        "text": ck.text,
        "text_list": ck.text_list,
        "name": ck.name,
        "names": ck.name_list,                                  # `train = [h, y]`: checked against the layers later
        "env": lambda v, key: env_name(ck, v, key),
        "raw": lambda v, key: v,
    }[k.kind]


# Prefixes of API keys/tokens (OpenAI, Hugging Face, Groq, GitHub, Slack, AWS, Google, Replicate, NVIDIA, ...)
KEY_PREFIXES = ("sk-", "sk_", "hf_", "gsk_", "ghp_", "gho_", "ghs_", "ghu_", "github_pat_", "glpat-", "xoxb-",
                "xoxp-", "AKIA", "ASIA", "AIza", "pk_", "rk_", "r8_", "nvapi-", "pplx-", "key-", "api_")
ENV_NAME_MAX = 128


def looks_like_secret(word: str) -> bool:
    """True for a value that is a key, token or URL rather than the name of the variable holding it: a URL, a known
    key prefix followed by a token (a run of >= 12 letters/digits), or a random-looking run: a `_`-separated part of
    >= 32 characters, or of >= 16 with digits in two or more places (names keep their digits together:
    `MYSERVICE2024KEY`; tokens scatter them: `abcdEFGH1234ijkl5678`)."""
    if "://" in word or word.startswith(("http:", "https:")):
        return True
    prefix = next((k for k in KEY_PREFIXES if word.startswith(k)), None)
    if prefix is not None and max(map(len, re.split(r"[^A-Za-z0-9]", word[len(prefix):]))) >= 12:
        return True
    for part in re.split(r"[_\-.]", word):
        if len(part) >= 32 or (len(part) >= 16 and len(re.findall(r"[0-9]+", part)) >= 2):
            return True
    return False


def env_name(ck: Checker, v: S.Value, key: str) -> Any:
    """The *name* of an environment variable ([A-Za-z_][A-Za-z0-9_]*, not longer than ENV_NAME_MAX); a value that
    is not one, or that looks like a key or URL, is refused (E315) so secrets never enter a file."""
    word = v.name if isinstance(v, S.Ident) else v.value if isinstance(v, S.Str) else None
    if word is None:
        return ck.type_error(v, "the name of an environment variable", key)
    secret = looks_like_secret(word)
    if secret or not ENV_NAME_RE.match(word) or len(word) > ENV_NAME_MAX:
        example = "OPENAI_BASE_URL" if key == "base_url_env" else "OPENAI_API_KEY"
        what = "a URL" if "://" in word else "a key" if secret else "not an environment variable name"
        return ck.error("E315", f"'{key}' must name an environment variable, not hold its value ({what})", v.span,
                        hint=f'write e.g. {key} = "{example}" and export the value in that variable'
                        if secret else "environment variable names are letters, digits and _, not starting with a "
                                       "digit")
    return word


# -------------------------------------------------------------------------------------------------------- outputs
def output_kind(ck: Checker, v: S.Value, layer: str, task_labels: tuple[ir.Label, ...] | None) -> Any:
    """`text` | `number` | `choice { name: "verbalizer" | ..., ... }` -> ir.Output."""
    if isinstance(v, S.Ident) and v.name in ("text", "number"):
        return ir.Output(kind=v.name)  # type: ignore[arg-type]
    if isinstance(v, S.Ident) and v.name == "choice":
        if task_labels:
            return ir.Output(kind="choice", labels=task_labels)
        return ck.error("E325", f"layer '{layer}': a choice output needs its labels", v.span, node=layer,
                        hint='write choice { yes: "yes" | "Yes", no: "no" | "No" } (or set data.task to a '
                             'built-in task, whose labels are then used)')
    if isinstance(v, S.Tagged):
        if v.tag.name != "choice":
            hint = did_you_mean(v.tag.name, ("choice",)) or "only `choice` takes a { label: verbalizers } map"
            return ck.error("E314", f"unknown output kind '{v.tag.name}'", v.tag.span, hint=hint)
        return _labels(ck, v.map, layer)
    if isinstance(v, (S.Ident, S.Str)):
        word = v.name if isinstance(v, S.Ident) else v.value
        hint = did_you_mean(word, ("text", "number", "choice")) or "one of: text, number, choice { ... }"
        return ck.error("E314", f"unknown output kind '{word}'", v.span, hint=hint)
    return ck.type_error(v, "text, number or choice { ... }", "output")


def _labels(ck: Checker, m: S.MapV, layer: str) -> Any:
    labels: list[ir.Label] = []
    names: dict[str, SourceSpan] = {}
    owner: dict[str, str] = {}
    ok = True
    for e in m.entries:
        if e.key in names:
            ck.error("E320", f"label '{e.key}' is declared twice", e.key_span, node=layer,
                     hint=f"first declared on line {names[e.key].line}; merge the verbalizers with |")
            ok = False
            continue
        names[e.key] = e.key_span
        opts = e.value.options if isinstance(e.value, S.Alt) else (e.value,)
        verbs: list[str] = []
        for o in opts:
            t = ck.text(o, f"label {e.key}")
            if t is INVALID:
                ok = False
                continue
            if t.strip() == "":
                ck.error("E322", f"label '{e.key}' has an empty verbalizer", o.span, node=layer,
                         hint="a verbalizer is the text the model writes for the label")
                ok = False
                continue
            if t in owner and owner[t] != e.key:
                ck.error("E321", f"verbalizer {t!r} is used by labels '{owner[t]}' and '{e.key}'", o.span,
                         node=layer, hint="each verbalizer must identify exactly one label")
                ok = False
                continue
            if t in verbs:
                continue
            owner[t] = e.key
            verbs.append(t)
        labels.append(ir.Label(e.key, tuple(verbs)))
    if len(m.entries) < 2 and ok:
        ck.error("E322", f"a choice needs at least two labels, got {len(m.entries)}", m.span, node=layer,
                 hint="use `output = text` for free text")
        ok = False
    return ir.Output(kind="choice", labels=tuple(labels)) if ok else INVALID


# -------------------------------------------------------------------------------------------------------- templates
def template_variables(ck: Checker, ref: ir.TemplateRef, available: Iterable[str], layer: str,
                       span: SourceSpan, role: str, *, line_offset: int = 0, col_offset: int = 0,
                       parse_path: str | None = None) -> None:
    """Statically check (jinja2.meta) that a template reads only variables its layer can supply."""
    from dlc.lang import templates as T

    try:
        used = T.undeclared(ref.text, path=parse_path or span.path, line_offset=line_offset,
                            col_offset=col_offset)
    except DlcTemplateError as e:
        if e.span is not None and e.span.path == ck.path:
            e.source = ck.source_text
        elif ref.kind == "file":
            e.source = ref.text
        ck.add(e.with_node(layer))
        return
    avail = set(available)
    for var in sorted(used - avail - set(T.environment().globals)):
        ck.error("E354", f"{role} template '{ref.name}' uses '{var}', which layer '{layer}' cannot supply",
                 span, node=layer, cls=DlcTemplateError,
                 hint=(did_you_mean(var, avail) or "") + (" " if did_you_mean(var, avail) else "")
                 + f"available: {', '.join(sorted(avail))}")


# -------------------------------------------------------------------------------------------------------- graph
@dataclass(frozen=True)
class GraphNode:
    name: str
    kind: Literal["input", "layer"]
    span: SourceSpan
    parents: tuple[S.Name, ...] = ()


def graph_checks(ck: Checker, nodes: Mapping[str, GraphNode], output: str | None) -> nx.DiGraph:
    """Build the DAG (edge parent -> child) and report cycles and layers that reach no output."""
    g = nx.DiGraph()
    for n in nodes.values():
        g.add_node(n.name)
    for n in nodes.values():
        for p in n.parents:
            if p.name in nodes:
                g.add_edge(p.name, n.name)
    reported: set[frozenset[str]] = set()
    for comp in nx.strongly_connected_components(g):
        if len(comp) == 1 and not g.has_edge(next(iter(comp)), next(iter(comp))):
            continue
        key = frozenset(comp)
        if key in reported:
            continue
        reported.add(key)
        cyc = [u for u, _ in nx.find_cycle(g.subgraph(comp))]
        start = min(cyc)
        i = cyc.index(start)
        cyc = cyc[i:] + cyc[:i]
        pretty = " -> ".join(cyc + [cyc[0]])
        ck.error("E401", f"cycle: {pretty}", nodes[start].span, cls=DlcGraphError, node=start,
                 hint="a layer cannot read (directly or indirectly) its own output; remove one of these edges")
    if output is not None and output in g and not reported:
        reach = nx.ancestors(g, output) | {output}
        for n in sorted(nodes.values(), key=lambda n: (n.span.line, n.span.col)):
            if n.kind == "layer" and n.name not in reach:
                ck.error("E402", f"layer '{n.name}' does not lead to the output '{output}'", n.span,
                         cls=DlcGraphError, node=n.name,
                         hint=f"feed it into a layer on the path to '{output}', or remove it")
    return g

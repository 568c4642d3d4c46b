"""The settings of a trained network written back into its source (`<net>.fit.dln`), so the file reproduces the run
wherever it is compiled from: the values `dlc compile --set` / `dlc fit --set` gave (they are in the run's graph, not
in its source) and the data paths, which a `.dln` gives relative to itself and which must not follow the file into
the run directory.

The method is a comparison, not a replay of the `--set` strings: compile the file as it will be found (the text with
its learned prompts, at the `.fit.dln`'s path), compare every key of the blocks' schema (`dlc.lang.schema`) with the
run's graph, and set each key that differs, in place in its block (a block the source does not have is added at the
end). What cannot be written as a `.dln` value (a nested `backward` block's setting, a template) is returned, so the
caller can say so."""
from __future__ import annotations

import re
from typing import Any, Mapping

from dlc import ir
from dlc.lang import schema
from dlc.lang import syntax as S
from dlc.lang.parse import encode_long_string, parse

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN = re.compile(r'^[^"\\\n\r]*$')                # a string that needs no escape
# custom keys whose value this module can write (the others are resolved with context: templates, outputs, ...)
_CUSTOM = {("data", "task"), ("data", "path"), ("data", "data_dir"), ("data", "fields"), ("fit", "train"),
           ("output", "target"), ("output", "metric"), ("layer", "calibration"), ("layer", "fixed")}
_SKIP = {("layer", "prompt"), ("layer", "offsets")}      # written by rewrite_prompts


def literal(kind: str, value: Any) -> str | None:
    """`value` as a .dln literal of a key of this kind, or None when it has none."""
    if value is None or kind == "raw":
        return None
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int":
        return str(int(value))
    if kind == "number":
        return repr(float(value))
    if kind in ("name", "choice") and isinstance(value, str) and _NAME.match(value):
        return value
    if kind == "names":
        return "[" + ", ".join(str(v) for v in value) + "]"
    if kind == "text_list":
        return "[" + ", ".join(encode_long_string(str(v)) for v in value) + "]"
    if kind == "fields":
        return "{ " + ", ".join(f"{k}: {encode_long_string(str(v))}" for k, v in value) + " }"
    if isinstance(value, str):
        return f'"{value}"' if _PLAIN.match(value) else encode_long_string(value)
    return None


def _block_values(graph: ir.Graph, block: str, name: str | None) -> dict[str, tuple[str, Any]]:
    """key -> (kind, value) of one block of a compiled graph."""
    obj: Any = {"fit": graph.fit, "data": graph.data, "output": graph}.get(block)
    if block == "model":
        obj = graph.models.get(name or "")
    elif block == "layer":
        obj = graph.layers.get(name or "")
    if obj is None:
        return {}
    out: dict[str, tuple[str, Any]] = {}
    for k in schema.keys(block).values():
        if (block, k.key) in _SKIP:
            continue
        value = schema.value_of(obj, k)
        kind = {"train": "names", "fields": "fields", "target": "name", "metric": "choice",
                "calibration": "choice", "fixed": "bool"}.get(k.key, k.kind)
        if k.custom and (block, k.key) not in _CUSTOM:
            kind = "raw"                                  # compared, never written (templates, outputs)
        if (block, k.key) == ("layer", "fixed"):
            value = not value                             # the key says fixed, the IR says trainable
        out[k.key] = (kind, value)
    return out


def differences(found: ir.Graph, run: ir.Graph) -> tuple[dict[tuple[str, str | None], dict[str, str]], list[str]]:
    """((block, name) -> {key: literal}) for every key whose value in `found` (the file as it compiles) is not the
    run's, and the dotted keys that differ but have no literal."""
    edits: dict[tuple[str, str | None], dict[str, str]] = {}
    missing: list[str] = []
    blocks: list[tuple[str, str | None]] = [("fit", None), ("data", None), ("output", None)]
    blocks += [("model", m) for m in sorted(run.models)] + [("layer", n) for n in run.order]
    for block, name in blocks:
        have, want = _block_values(found, block, name), _block_values(run, block, name)
        for key, (kind, value) in want.items():
            if key in have and have[key][1] == value:
                continue
            lit = literal(kind, value)
            dotted = ".".join(x for x in (block, name, key) if x)
            if lit is None:
                missing.append(dotted)
            else:
                edits.setdefault((block, name), {})[key] = lit
    return edits, missing


def _decl(program: S.Program, block: str, name: str | None) -> Any:
    for d in program.statements:
        if block in ("fit", "data") and isinstance(d, S.ConfigDecl) and d.kind == block:
            return d
        if block == "model" and isinstance(d, S.ModelDecl) and d.name.name == name:
            return d
        if block == "layer" and isinstance(d, S.LayerDecl) and d.name.name == name:
            return d
        if block == "output" and isinstance(d, S.OutputDecl):
            return d
    return None


def write_settings(text: str, path: str, edits: Mapping[tuple[str, str | None], Mapping[str, str]]) -> str:
    """`text` with each (block, name)'s keys set to the literals: a key the block has is replaced where it is, a
    key it lacks is added after its opening brace, a block the file lacks is appended (`model NAME { ... }`,
    `fit { ... }`, `data { ... }`). Comments and layout elsewhere are kept."""
    program = parse(text, path)
    starts = [0]
    for ln in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(ln))

    def off(line: int, col: int) -> int:
        return starts[line - 1] + col - 1

    cuts: list[tuple[int, int, str]] = []
    appended: list[str] = []
    for (block, name), items in edits.items():
        d = _decl(program, block, name)
        body = getattr(d, "body", None) if d is not None else None
        adds = []
        for key, lit in items.items():
            s = next((x for x in body.items if isinstance(x, S.Setting) and x.key == key), None) if body else None
            if s is not None:
                v = s.value.span
                cuts.append((off(v.line, v.col), off(v.end_line or v.line, v.end_col or v.col), lit))
            else:
                adds.append(f"{key} = {lit}")
        if not adds:
            continue
        if d is None:
            head = {"model": f"model {name}"}.get(block, block)
            appended.append(f"{head} {{ " + "  ".join(adds) + " }")
        elif body is not None:
            first = next((x for x in body.items if isinstance(x, S.Setting)), None)
            if first is not None and first.key_span.line > body.span.line:     # one setting per line: add lines
                line = text.splitlines(keepends=True)[first.key_span.line - 1]
                indent = line[: len(line) - len(line.lstrip(" \t"))]
                at = off(first.key_span.line, 1)
                cuts.append((at, at, "".join(f"{indent}{a}\n" for a in adds)))
            else:
                at = off(body.span.line, body.span.col) + 1
                cuts.append((at, at, " " + "  ".join(adds) + " "))
        else:                                   # `layer h(x)` / `output y` without a body
            end = off(d.span.end_line or d.span.line, d.span.end_col or d.span.col)
            if block == "layer":
                end = text.index(")", end) + 1
            cuts.append((end, end, " { " + "  ".join(adds) + " }"))
    for start, end, rep in sorted(cuts, reverse=True):
        text = text[:start] + rep + text[end:]
    if appended:
        text = text.rstrip("\n") + "\n\n# settings of the run that the source did not have (dlc fit wrote them)\n" \
            + "\n".join(appended) + "\n"
    return text


def write_back(text: str, path: str, run: ir.Graph) -> tuple[str, list[str]]:
    """`text` (the source with its learned prompts, to be written at `path`) with the run's settings set where the
    file, compiled there, would differ; and what still differs afterwards (keys without a literal, or the reason
    the file does not compile at its new place, e.g. a template file given relative to the source)."""
    from dlc.errors import DlcError
    from dlc.lang.compiler import compile_source

    try:
        edits, missing = differences(compile_source(text, path), run)
        if not edits:
            return text, missing
        out = write_settings(text, path, edits)
        left, missing = differences(compile_source(out, path), run)
    except DlcError as e:
        return text, [f"(the file does not compile where it is written: {e.message})"]
    except Exception as e:  # noqa: BLE001 -- never lose a finished fit's result over the write-back
        return text, [f"(settings not written back: {type(e).__name__})"]
    return out, missing + [".".join(x for x in (b, n, k) if x) for (b, n), ks in left.items() for k in ks]


__all__ = ["differences", "literal", "write_back", "write_settings"]

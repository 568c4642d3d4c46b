"""`--set BLOCK.KEY=VALUE`: the arguments, read one way by every command (compile, show, fit, eval), and their
application to the syntax tree before checking (`apply_overrides`, called by the compiler).

The value is kept exactly as typed (the compiler parses it as a `.dln` value, so `--set layer.h.prompt="  Think.  "`
is the same prompt, and the same graph hash, under every command); the key is stripped of surrounding blanks. A later
`--set` of the same key wins, like repeated command-line flags. Typing and range checks happen in the compiler.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Iterable, Mapping

from dlc.errors import CompileFailed, DlcError, DlcSyntaxError, DlcUsageError, SourceSpan, did_you_mean
from dlc.lang import syntax as S
from dlc.lang.check import IMPLICIT_MODELS
from dlc.lang.schema import keys
from dlc.lang.parse import MAX_SOURCE_CHARS, parse_value


def parse_sets(items: Iterable[str] | None) -> dict[str, str]:
    """`["fit.iters=4", ...]` -> {"fit.iters": "4"}; E101 when an item is not BLOCK.KEY=VALUE."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DlcUsageError(f"--set '{item}' is not BLOCK.KEY=VALUE", code="E101",
                                hint="e.g. --set fit.iters=4 --set data.task=navigate")
        if "." not in key or key.startswith(".") or key.endswith("."):
            raise DlcUsageError(f"--set '{item}': the key must be a dotted path BLOCK.KEY", code="E101",
                                hint="e.g. fit.iters, fit.batch_size, data.task, data.train_size")
        out[key] = value
    return out


def apply_overrides(program: S.Program, overrides: Mapping[str, str]
                    ) -> tuple[S.Program, list[DlcError], dict[str, str]]:
    """Apply `--set key=value` overrides to the syntax tree (before checking, so they get the same errors).

    Keys: `fit.K`, `data.K`, `output.K`, `layer.NAME.K`, `layer.NAME.backward.K`, `model.NAME.K` (an implicit
    model — tiny, small, default — is created by its first override). A value is parsed as a .dln value; text that is
    not a valid value (e.g. `Think step by step.`) is taken as a string."""
    errors: list[DlcError] = []
    sources: dict[str, str] = {}
    stmts = list(program.statements)
    schemas = {block: keys(block) for block in ("fit", "data", "output", "layer", "backward", "model")}
    for key, raw in overrides.items():
        if _SURROGATE.search(key) or _SURROGATE.search(raw):
            # an argument with bytes that are not UTF-8 (Python keeps them as lone surrogates) or a "\ud800" from
            # Python: no file dlc writes could hold it (UTF-8), so it is refused here, before anything is written
            errors.append(DlcUsageError(
                f"--set {key!a}: the value is not valid text (undecodable bytes or a lone UTF-16 surrogate: "
                f"{raw[:60]!a}{'...' if len(raw) > 60 else ''})", code="E107", hint="pass UTF-8 text (check the terminal's or the script's encoding)"))
            continue
        if len(raw) > MAX_SOURCE_CHARS:      # taken as a string otherwise: the cap of a .dln holds for a value too
            errors.append(DlcSyntaxError(f"--set {key}: the value is {len(raw):,} characters, over the cap of "
                                         f"{MAX_SOURCE_CHARS:,}", code="E216",
                                         hint="long prompts and templates go in template files"))
            continue
        text = f"{key}={raw}"
        opath = f"--set {key}"
        sources[opath] = text
        src_span = SourceSpan(opath, 1, 1, 1, len(key) + 1)

        def bad(msg: str, hint: str | None = None, code: str = "E102") -> None:
            errors.append(DlcUsageError(msg, code=code, span=src_span, hint=hint, source=text))

        parts = key.split(".")
        value = _override_value(raw, len(key) + 2, opath)
        if parts[0] in ("fit", "data", "output") and len(parts) == 2:
            kind, k = parts
            if k not in schemas[kind]:
                bad(f"unknown override key '{key}'",
                    hint=_dym(k, schemas[kind], prefix=f"{kind}.") or f"keys of {kind}: {', '.join(schemas[kind])}")
                continue
            stmts = _set_in_config(stmts, kind, k, value, src_span)
        elif parts[0] == "layer" and len(parts) in (3, 4):
            names = [d.name.name for d in stmts if isinstance(d, S.LayerDecl)]
            if parts[1] not in names:
                bad(f"--set {key}: no layer named '{parts[1]}'",
                    hint=did_you_mean(parts[1], names) or f"layers: {', '.join(names)}")
                continue
            if len(parts) == 4 and parts[2] != "backward":
                bad(f"unknown override key '{key}'", hint=f"did you mean 'layer.{parts[1]}.backward.{parts[3]}'?")
                continue
            schema = schemas["backward"] if len(parts) == 4 else schemas["layer"]
            k = parts[-1]
            if k not in schema:
                pre = f"layer.{parts[1]}." + ("backward." if len(parts) == 4 else "")
                bad(f"unknown override key '{key}'", hint=_dym(k, schema, prefix=pre))
                continue
            stmts = _set_in_layer(stmts, parts[1], k, value, src_span, backward=len(parts) == 4)
        elif parts[0] == "model" and len(parts) == 3:
            names = [d.name.name for d in stmts if isinstance(d, S.ModelDecl)]
            if parts[1] not in names and parts[1] not in IMPLICIT_MODELS:
                bad(f"--set {key}: no model named '{parts[1]}'",
                    hint=did_you_mean(parts[1], list(names) + list(IMPLICIT_MODELS)))
                continue
            if parts[2] not in schemas["model"]:
                bad(f"unknown override key '{key}'", hint=_dym(parts[2], schemas["model"], prefix=f"model.{parts[1]}."))
                continue
            stmts = _set_in_model(stmts, parts[1], parts[2], value, src_span)
        else:
            first = parts[0]
            hint = "keys look like fit.iters, data.task, output.metric, layer.NAME.prompt, model.NAME.model"
            if first not in ("fit", "data", "output", "layer", "model"):
                d = did_you_mean(first, ("fit", "data", "output", "layer", "model"))
                if d:
                    hint = d
            bad(f"unknown override key '{key}'", hint=hint)
    return replace(program, statements=tuple(stmts)), errors, sources


def _dym(k: str, schema: Mapping[str, Any], prefix: str) -> str | None:
    m = did_you_mean(k, schema)
    return m.replace("'", f"'{prefix}", 1) if m else None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _override_value(raw: str, col: int, path: str) -> S.Value:
    try:
        v = parse_value(raw, path)
    except (DlcError, CompileFailed):
        v = None
    span = SourceSpan(path, 1, col, 1, col + max(1, len(raw)))
    if v is None or (isinstance(v, S.Ident) and v.name != raw.strip()):
        return S.Str(raw, span)
    return _respan(v, col - 1)


def _respan(v: S.Value, shift: int) -> S.Value:
    """Shift the columns of a parsed override value so errors point into `key=value`."""
    def sp(s: SourceSpan) -> SourceSpan:
        return SourceSpan(s.path, 1, s.col + shift, 1, (s.end_col or s.col + 1) + shift)

    if isinstance(v, S.ListV):
        return S.ListV(tuple(_respan(i, shift) for i in v.items), sp(v.span))
    if isinstance(v, S.Alt):
        return S.Alt(tuple(_respan(i, shift) for i in v.options), sp(v.span))
    if isinstance(v, S.MapV):
        return S.MapV(tuple(S.Entry(e.key, sp(e.key_span), _respan(e.value, shift)) for e in v.entries), sp(v.span))
    if isinstance(v, S.Tagged):
        m = _respan(v.map, shift)
        assert isinstance(m, S.MapV)
        return S.Tagged(S.Ident(v.tag.name, sp(v.tag.span)), m, sp(v.span))
    if isinstance(v, S.FileRef):
        p = _respan(v.path, shift)
        assert isinstance(p, S.Str)
        return S.FileRef(p, sp(v.span))
    return replace(v, span=sp(v.span))  # type: ignore[type-var]


def _put(block: S.Block | None, key: str, value: S.Value, span: SourceSpan, nested: str | None = None) -> S.Block:
    """The block with `key` set to `value` (replacing an existing setting, or appended)."""
    items = list(block.items) if block is not None else []
    if nested is not None:
        for i, it in enumerate(items):
            if isinstance(it, S.Nested) and it.name == nested:
                items[i] = S.Nested(it.name, it.name_span, _put(it.body, key, value, span))
                break
        else:
            items.append(S.Nested(nested, span, _put(None, key, value, span)))
        return S.Block(tuple(items), block.span if block is not None else span)
    new = S.Setting(key, span, value, span)
    for i, it in enumerate(items):
        if isinstance(it, S.Setting) and it.key == key:
            items[i] = new
            break
    else:
        items.append(new)
    return S.Block(tuple(items), block.span if block is not None else span)


def _set_in_config(stmts: list[S.Statement], kind: str, key: str, value: S.Value, span: SourceSpan) -> list:
    for i, s in enumerate(stmts):
        if kind == "output" and isinstance(s, S.OutputDecl):
            stmts[i] = replace(s, body=_put(s.body, key, value, span))
            return stmts
        if isinstance(s, S.ConfigDecl) and s.kind == kind:
            stmts[i] = replace(s, body=_put(s.body, key, value, span))
            return stmts
    if kind == "output":   # no output statement: the checker reports E403; the override has nowhere to go
        return stmts
    stmts.append(S.ConfigDecl(kind, _put(None, key, value, span), span))
    return stmts


def _set_in_layer(stmts: list[S.Statement], layer: str, key: str, value: S.Value, span: SourceSpan,
                  backward: bool) -> list:
    for i, s in enumerate(stmts):
        if isinstance(s, S.LayerDecl) and s.name.name == layer:
            stmts[i] = replace(s, body=_put(s.body, key, value, span, nested="backward" if backward else None))
    return stmts


def _set_in_model(stmts: list[S.Statement], model: str, key: str, value: S.Value, span: SourceSpan) -> list:
    for i, s in enumerate(stmts):
        if isinstance(s, S.ModelDecl) and s.name.name == model:
            stmts[i] = replace(s, body=_put(s.body, key, value, span))
            return stmts
    stmts.append(S.ModelDecl(S.Name(model, span), _put(None, key, value, span), span))
    return stmts


__all__ = ["parse_sets", "apply_overrides"]

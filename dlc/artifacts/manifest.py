"""The compiled artifact: `ir.Graph` <-> versioned JSON (never a pickle), written atomically.

Layout (`schema_version` "dlc/manifest/v1"):

    {"schema_version", "dlc_version", "generated_at",
     "source": {"path", "sha256"},
     "network": {"name", "inputs", "output", "target", "metric", "order"},
     "templates": {id: {"name", "kind", "path", "sha256", "text"}},     each distinct template once
     "nodes": {name: {"kind": "input"} | {"kind": "layer", "parents", "template": id, "prompt", "trainable",
                                            "output", "generation", "backward", "model", ...}},
     "edges": [[parent, child], ...],                                  the networkx DAG, rebuilt on load
     "parameters": {"<network>.<layer>.prompt": {"layer", "init", "trainable"}},
     "models": {...}, "data": {...}, "fit": {...}}

`from_json(to_json(g)) == g` exactly. The layer, model, data and fit entries are the IR dataclasses' fields in field
order, written and read by one walk over them (`_encode`, `_decode`), so a new `ir.setting` needs no code here.
`dlc.artifacts.identity` hashes what the graph *means* (not where or when it was compiled, nor its source positions),
so `dlc fit --resume` can refuse a run whose graph changed.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from dlc import __version__, ir, jsonread
from dlc.artifacts.canonical import canonical_json
from dlc.errors import DlcArtifactError, DlcUsageError
from dlc.fsutil import atomic_write_text, output_problem

MANIFEST_DIR = ".dlc"
LAST_FILE = "LAST"


# ---------------------------------------------------------------------------------------------------- to JSON
def _tref_id(t: ir.TemplateRef) -> str:
    return f"{t.kind}:{t.name}@{t.sha256[:12]}"


def _tref_json(t: ir.TemplateRef) -> dict[str, Any]:
    return {"name": t.name, "kind": t.kind, "path": t.path, "sha256": t.sha256, "text": t.text}


def to_json(graph: ir.Graph) -> dict[str, Any]:
    templates: dict[str, dict[str, Any]] = {}

    def tid(t: ir.TemplateRef) -> str:
        i = _tref_id(t)
        templates.setdefault(i, _tref_json(t))
        return i

    nodes: dict[str, Any] = {n: {"kind": "input"} for n in graph.inputs}
    for name in graph.order:
        node = _encode(graph.layers[name], tid)
        del node["name"]
        node["offsets"] = {k: v for k, v in graph.layers[name].offsets}
        nodes[name] = {"kind": "layer", **node}
    return {
        "schema_version": ir.SCHEMA_VERSION,
        "dlc_version": __version__,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": graph.source_path, "sha256": graph.source_sha256},
        "network": {"name": graph.name, "inputs": list(graph.inputs), "output": graph.output,
                    "target": graph.target, "metric": graph.metric, "order": list(graph.order)},
        "templates": templates,
        "nodes": nodes,
        "edges": [[p, n] for n in graph.order for p in graph.layers[n].parents],
        "parameters": {f"{graph.name}.{n}.prompt": {"layer": n, "init": graph.layers[n].prompt,
                                                     "trainable": graph.layers[n].trainable}
                       for n in graph.order},
        "models": {n: _encode(m, tid) for n, m in graph.models.items()},
        "data": _encode(graph.data, tid),
        "fit": _encode(graph.fit, tid),
    }


def _encode(x: Any, tid: Callable[[ir.TemplateRef], str]) -> Any:
    """An IR value as JSON: a dataclass as {field: value} in field order, a tuple as a list, a template as its id."""
    if isinstance(x, ir.TemplateRef):
        return tid(x)
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: _encode(getattr(x, f.name), tid) for f in fields(x)}
    if isinstance(x, tuple):
        return [_encode(i, tid) for i in x]
    return x


# ---------------------------------------------------------------------------------------------------- from JSON
def from_json(d: dict[str, Any]) -> ir.Graph:
    """Rebuild the Graph. Raises DlcArtifactError (E507 schema version, E508 malformed) on a bad document."""
    if not isinstance(d, dict):
        raise DlcArtifactError("the manifest is not a JSON object", code="E508",
                               hint="recompile the network with `dlc compile`")
    version = d.get("schema_version")
    if version != ir.SCHEMA_VERSION:
        raise DlcArtifactError(f"unsupported manifest schema {version!r} (this dlc reads {ir.SCHEMA_VERSION!r})",
                               code="E507", hint="recompile the network with this version of dlc")
    try:
        return _from_json(d)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise DlcArtifactError(f"the manifest is malformed: {_malformed(e)}", code="E508",
                               hint="recompile the network with `dlc compile`") from None


def _malformed(e: Exception) -> str:
    """What is wrong, in the manifest's terms, not as a Python exception ("(KeyError: 'nodes')" was shown before)."""
    if isinstance(e, KeyError) and e.args:
        return f"the entry {e.args[0]!r} is missing"
    if isinstance(e, ValueError) and str(e):
        return str(e)                        # the decoder's own words ("unknown fit options [...]") or a bad number
    return "an entry has the wrong type or shape"


def _from_json(d: dict[str, Any]) -> ir.Graph:
    tpl = {i: ir.TemplateRef(name=t["name"], kind=t["kind"], text=t["text"], sha256=t["sha256"], path=t["path"])
           for i, t in d["templates"].items()}
    net = d["network"]
    layers: dict[str, ir.Layer] = {}
    for name in net["order"]:
        n = dict(d["nodes"][name], name=name)
        n["offsets"] = [[str(k), float(v)] for k, v in (n.get("offsets") or {}).items()]
        back = n.get("backward")
        if isinstance(back, dict) and "posterior_max_tokens" not in back:
            # (added after v1 began) an artifact from before drew its posterior samples up to backward.max_tokens:
            # it keeps that cap, so a run resumed or re-fitted from it runs the algorithm it started with
            n["backward"] = back = dict(back, posterior_max_tokens=back.get("max_tokens", 0))
        if isinstance(back, dict) and "posterior_layer_stop" not in back:
            # (added after v1 began) likewise, its samples ended at backward.stop only
            n["backward"] = dict(back, posterior_layer_stop=False)
        layers[name] = _decode(ir.Layer, n, tpl, optional=("calibration", "offsets"))   # (added after v1 began)
    return ir.Graph(
        name=net["name"], inputs=tuple(net["inputs"]), layers=layers, order=tuple(net["order"]),
        output=net["output"], target=net["target"], metric=net["metric"],
        models={k: _decode(ir.ModelConfig, v, tpl, strict="model") for k, v in d["models"].items()},
        data=_decode(ir.DataConfig, d["data"], tpl, strict="data"),
        fit=_decode(ir.FitConfig, d["fit"], tpl, strict="fit"),
        source_path=d["source"]["path"], source_sha256=d["source"]["sha256"])


def _decode(cls: type, d: dict[str, Any], tpl: dict[str, ir.TemplateRef], *, strict: str = "",
            optional: Iterable[str] = ()) -> Any:
    """The inverse of `_encode`, typed by `cls`'s field hints. `strict` (a block name): an unknown key is an error and
    a missing one takes the default; otherwise only the `optional` keys may be missing (KeyError, i.e. E508)."""
    if not isinstance(d, dict):
        raise TypeError(f"{cls.__name__} is not an object")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if strict and unknown:
        raise ValueError(f"unknown {strict} options {unknown}")
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in fields(cls):
        if f.name in d:
            try:
                kw[f.name] = _value(hints[f.name], d[f.name], tpl)
            except _WrongType as e:
                raise ValueError(f"'{f.name}' of {cls.__name__} {e}") from None
        elif not (strict or f.name in optional) or (f.default is MISSING and f.default_factory is MISSING):
            raise KeyError(f.name)
    return cls(**kw)


class _WrongType(ValueError):
    """A scalar of the wrong JSON type (a hand-edited artifact: `"iters": "x"`), named by `_decode`."""


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _value(t: Any, v: Any, tpl: dict[str, ir.TemplateRef]) -> Any:
    """`v` as a value of type `t`. Scalars are checked, not converted: a float field keeps an integer as written
    (the graph hash is over the JSON as written, so 1 must not come back as 1.0)."""
    if t in _SCALARS:
        ok = isinstance(v, bool) if t is bool else isinstance(v, (int, float)) and not isinstance(v, bool) \
            if t is float else isinstance(v, t) and not isinstance(v, bool)
        if not ok:
            raise _WrongType(f"must be {_SCALARS[t]}, not {json.dumps(v)[:40]}")
        return v
    if typing.get_origin(t) is typing.Literal:
        if v not in typing.get_args(t):
            raise _WrongType(f"must be one of {', '.join(map(json.dumps, typing.get_args(t)))}, not "
                             f"{json.dumps(v)[:40]}")
        return v
    if t is ir.TemplateRef:
        return tpl[v]
    if is_dataclass(t):
        return _decode(t, v, tpl)
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is tuple:
        if not isinstance(v, list):
            raise TypeError(f"expected a list, got {type(v).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], i, tpl) for i in v)
        return tuple(_value(a, i, tpl) for a, i in zip(args, v, strict=True))
    if origin in (typing.Union, types.UnionType) and v is None:
        return None
    if origin in (typing.Union, types.UnionType):
        return _value(next(a for a in args if a is not type(None)), v, tpl)
    return v


# ---------------------------------------------------------------------------------------------------- hashing
canonical = canonical_json




# ---------------------------------------------------------------------------------------------------- files
def write(graph: ir.Graph, path: str | Path) -> Path:
    p = Path(path)
    text = json.dumps(to_json(graph), indent=2, ensure_ascii=False) + "\n"
    bad = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:      # a lone surrogate (from Python, or an undecodable argument): not UTF-8 text
        line = text.count("\n", 0, bad) + 1
        raise DlcArtifactError(f"cannot write {p}: the network holds text that is not valid Unicode (a lone UTF-16 "
                               f"surrogate, line {line}: {text[max(0, bad - 30):bad + 1]!a})", code="E506",
                               hint="prompts, labels and settings must be UTF-8 text") from None
    problem = output_problem(p)
    if problem is None:
        try:
            atomic_write_text(p, text)
            return p
        except OSError as e:
            problem = str(e.strerror or e)
    raise DlcArtifactError(f"cannot write {p}: {problem}", code="E506",
                           hint="write it to a file in a writable directory (-o PATH)")


def read(path: str | Path) -> ir.Graph:
    p = Path(path)
    if p.is_dir():
        raise DlcUsageError(f"{p} is a directory, not a compiled network", code="E104",
                            hint="pass the .json file `dlc compile` wrote (or a run directory to commands that "
                                 "take one)")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DlcUsageError(f"no compiled network at {p}: no such file", code="E104",
                               hint="run `dlc compile NET.dln` first") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DlcArtifactError(f"cannot read {p}: {e}", code="E502", hint="recompile with `dlc compile`") from None
    try:
        d = jsonread.loads(text)
    except jsonread.BadJSON as e:
        raise DlcArtifactError(f"{p} is not valid JSON ({e.where()}{e.msg})",
                               code="E502", hint="the file is corrupt; recompile with `dlc compile`") from None
    try:
        return from_json(d)
    except DlcArtifactError as e:
        e.message = f"{p}: {e.message}"
        e.args = (e.message,)
        raise


def default_path(graph: ir.Graph, cwd: str | Path = ".") -> Path:
    return Path(cwd) / MANIFEST_DIR / f"{graph.name}.json"


def check_last(cwd: str | Path = ".") -> None:
    """E506 when `.dlc/LAST` cannot be written (`.dlc` is a file, say): asked before `dlc compile` writes the
    artifact, so a compile that cannot finish leaves nothing behind."""
    last = Path(cwd) / MANIFEST_DIR / LAST_FILE
    problem = output_problem(last)
    if problem is not None:
        raise DlcArtifactError(f"cannot record the compiled network in {last}: {last} {problem}", code="E506",
                               hint=f"{Path(cwd) / MANIFEST_DIR} must be a writable directory (dlc keeps its "
                                    "compiled networks there): move what is in the way")


def record_last(path: str | Path, cwd: str | Path = ".") -> None:
    """Remember the last compiled manifest so `dlc fit` with no argument finds it."""
    last = Path(cwd) / MANIFEST_DIR / LAST_FILE
    try:
        atomic_write_text(last, str(Path(path).resolve()) + "\n")
    except OSError as e:
        raise DlcArtifactError(f"cannot record the compiled network in {last}: {e.strerror or e}", code="E506",
                               hint=f"{Path(cwd) / MANIFEST_DIR} must be a writable directory") from None


def find_last(cwd: str | Path = ".") -> Path:
    """The manifest written by the last `dlc compile` in `cwd` (E505 when there is none)."""
    last = Path(cwd) / MANIFEST_DIR / LAST_FILE
    try:
        target = last.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise DlcArtifactError(f"{last} is damaged (not UTF-8 text)", code="E505",
                               hint="run `dlc compile NET.dln` again, or name the network: `dlc fit NET.dln`") \
            from None
    except OSError:
        raise DlcArtifactError(f"no compiled network in {Path(cwd).resolve()}", code="E505",
                               hint="run `dlc compile NET.dln` first, or name the network: `dlc fit NET.dln`") \
            from None
    p = Path(target)
    if not p.is_file():
        raise DlcArtifactError(f"the last compiled network {p} no longer exists", code="E505",
                               hint="run `dlc compile NET.dln` again")
    return p


__all__ = ["to_json", "from_json", "write", "read", "find_last", "record_last", "default_path",
           "atomic_write_text", "canonical"]

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

`from_json(to_json(g)) == g` exactly. `dlc.artifacts.identity` hashes what the graph *means* (not where or when it
was compiled, nor its source positions), so `dlc fit --resume` can refuse a run whose graph changed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dlc import __version__, ir
from dlc.artifacts.canonical import canonical_json
from dlc.errors import DlcArtifactError, DlcUsageError
from dlc.fsutil import atomic_write_text

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
        lay = graph.layers[name]
        nodes[name] = {
            "kind": "layer",
            "parents": list(lay.parents),
            "template": tid(lay.template),
            "prompt": lay.prompt,
            "trainable": lay.trainable,
            "output": {"kind": lay.output.kind,
                       "labels": [{"name": lb.name, "verbalizers": list(lb.verbalizers)} for lb in lay.output.labels]},
            "generation": {"max_tokens": lay.generation.max_tokens, "temperature": lay.generation.temperature,
                           "top_p": lay.generation.top_p, "stop": list(lay.generation.stop)},
            "backward": {"prompt_template": tid(lay.backward.prompt_template),
                         "posterior": [{"template": tid(c.template), "weight": c.weight}
                                       for c in lay.backward.posterior],
                         "max_tokens": lay.backward.max_tokens, "stop": list(lay.backward.stop)},
            "model": lay.model,
            "backward_model": lay.backward_model,
            "format": lay.format,
            "system": lay.system,
            "answer_prefix": lay.answer_prefix,
            "calibration": lay.calibration,
            "offsets": {k: v for k, v in lay.offsets},
            "span": lay.span,
        }
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
        "models": {n: asdict(m) for n, m in graph.models.items()},
        "data": {**asdict(graph.data), "fields": [list(f) for f in graph.data.fields]},
        "fit": {**asdict(graph.fit), "train": list(graph.fit.train)},
    }


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
        raise DlcArtifactError(f"the manifest is malformed ({type(e).__name__}: {e})", code="E508",
                               hint="recompile the network with `dlc compile`") from None


def _from_json(d: dict[str, Any]) -> ir.Graph:
    tpl = {i: ir.TemplateRef(name=t["name"], kind=t["kind"], text=t["text"], sha256=t["sha256"], path=t["path"])
           for i, t in d["templates"].items()}
    net = d["network"]
    layers: dict[str, ir.Layer] = {}
    for name in net["order"]:
        n = d["nodes"][name]
        b = n["backward"]
        g = n["generation"]
        layers[name] = ir.Layer(
            name=name, parents=tuple(n["parents"]), template=tpl[n["template"]], prompt=n["prompt"],
            trainable=bool(n["trainable"]),
            output=ir.Output(kind=n["output"]["kind"],
                             labels=tuple(ir.Label(lb["name"], tuple(lb["verbalizers"]))
                                          for lb in n["output"]["labels"])),
            generation=ir.Generation(max_tokens=g["max_tokens"], temperature=g["temperature"], top_p=g["top_p"],
                                     stop=tuple(g["stop"])),
            backward=ir.Backward(prompt_template=tpl[b["prompt_template"]],
                                 posterior=tuple(ir.PosteriorComponent(tpl[c["template"]], c["weight"])
                                                 for c in b["posterior"]),
                                 max_tokens=b["max_tokens"], stop=tuple(b["stop"])),
            model=n["model"], backward_model=n["backward_model"], format=n["format"], system=n["system"],
            answer_prefix=n["answer_prefix"], calibration=n.get("calibration", "none"),
            offsets=tuple((str(k), float(v)) for k, v in (n.get("offsets") or {}).items()), span=n["span"])
    data = dict(d["data"])
    data["fields"] = tuple(tuple(f) for f in data["fields"])
    fit = dict(d["fit"])
    fit["train"] = tuple(fit["train"])
    known_fit = {f.name for f in fields(ir.FitConfig)}
    unknown = sorted(set(fit) - known_fit)
    if unknown:
        raise ValueError(f"unknown fit options {unknown}")
    return ir.Graph(
        name=net["name"], inputs=tuple(net["inputs"]), layers=layers, order=tuple(net["order"]),
        output=net["output"], target=net["target"], metric=net["metric"],
        models={k: ir.ModelConfig(**v) for k, v in d["models"].items()},
        data=ir.DataConfig(**data), fit=ir.FitConfig(**fit),
        source_path=d["source"]["path"], source_sha256=d["source"]["sha256"])


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
    try:
        atomic_write_text(p, text)
    except OSError as e:
        raise DlcArtifactError(f"cannot write {p}: {e.strerror}", code="E506",
                               hint="check the directory exists and is writable, or pass -o") from None
    return p


def read(path: str | Path) -> ir.Graph:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DlcUsageError(f"no compiled network at {p}: no such file", code="E104",
                               hint="run `dlc compile NET.dln` first") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DlcArtifactError(f"cannot read {p}: {e}", code="E502", hint="recompile with `dlc compile`") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise DlcArtifactError(f"{p} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})",
                               code="E502", hint="the file is corrupt; recompile with `dlc compile`") from None
    try:
        return from_json(d)
    except DlcArtifactError as e:
        e.message = f"{p}: {e.message}"
        e.args = (e.message,)
        raise


def default_path(graph: ir.Graph, cwd: str | Path = ".") -> Path:
    return Path(cwd) / MANIFEST_DIR / f"{graph.name}.json"


def record_last(path: str | Path, cwd: str | Path = ".") -> None:
    """Remember the last compiled manifest so `dlc fit` with no argument finds it."""
    atomic_write_text(Path(cwd) / MANIFEST_DIR / LAST_FILE, str(Path(path).resolve()) + "\n")


def find_last(cwd: str | Path = ".") -> Path:
    """The manifest written by the last `dlc compile` in `cwd` (E505 when there is none)."""
    last = Path(cwd) / MANIFEST_DIR / LAST_FILE
    try:
        target = last.read_text(encoding="utf-8").strip()
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

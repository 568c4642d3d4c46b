"""What a command points at: `--set` overrides, `--seeds`, and a target (a .dln file, a compiled artifact, a run
directory, or the last `dlc compile`) resolved to a compiled graph with its provenance."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from dlc.artifacts import manifest
from dlc.artifacts.identity import graph_identities, resolved_config
from dlc.artifacts.rundir import CONFIG, GRAPH, SOURCE, RunDir
from dlc.errors import DlcArtifactError, DlcError, DlcUsageError
from dlc.ir import Graph
from dlc.lang import compiler
from dlc.lang.overrides import parse_sets  # noqa: F401 (re-exported by dlc.app)


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """`--seeds 13,42,25` -> (13, 42, 25)."""
    if text is None or not text.strip():
        return ()
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise DlcUsageError(f"--seeds '{text}' is not a comma-separated list of integers", code="E111",
                            hint="e.g. --seeds 13,42,25") from None
    if len(set(seeds)) != len(seeds):
        raise DlcUsageError(f"--seeds '{text}' repeats a seed", code="E111")
    return seeds


# ------------------------------------------------------------------------------------------------ networks

@dataclass
class Network:
    """A compiled graph plus where it came from (for `<net>.fit.dln` and the run's provenance)."""

    graph: Graph
    name: str                        # the `network` name, as the artifact's (.dlc/<name>.json): runs/<name>-<timestamp>,
                                     # <name>.fit.dln, whatever the file is called
    source_text: str | None = None   # the .dln text, when known
    source_path: str | None = None
    artifact_path: str | None = None
    differs: tuple[str, ...] = ()    # `--set` on a run: "key: run value -> value now", for each setting changed


def _read_source(graph: Graph) -> str | None:
    """The .dln text a graph was compiled from, if the file still has the hash recorded at compile time."""
    p = graph.source_path
    if not p or not Path(p).is_file():
        return None
    try:
        text = compiler.read_dln(p)
    except DlcUsageError:
        return None          # rewritten since (not UTF-8 any more, unreadable): not the source it was compiled from
    if graph.source_sha256 and hashlib.sha256(text.encode("utf-8")).hexdigest() != graph.source_sha256:
        return None
    return text


def _source_file(graph: Graph, artifact: Path) -> Path | None:
    """Where the artifact's recorded source is now: its path as recorded (relative to the current directory), or,
    for a relative path and an artifact in `.dlc/`, relative to the directory `dlc compile` ran in."""
    if not graph.source_path:
        return None
    recorded = Path(graph.source_path)
    candidates = [recorded]
    if not recorded.is_absolute() and artifact.parent.name == manifest.MANIFEST_DIR:
        candidates.append(artifact.parent.parent / recorded)
    return next((c for c in candidates if c.is_file()), None)


def recompile_artifact(graph: Graph, artifact: Path,
                       overrides: Mapping[str, str]) -> tuple[Graph, str, str, str]:
    """`--set` on a compiled artifact: the overrides are .dln edits, so compile the recorded source again with
    them -- but only while that source is byte for byte what the artifact was compiled from (its sha256), or the
    user would silently get a different network. Returns (graph, name, source text, source path)."""
    src = _source_file(graph, artifact)
    if src is None:
        raise DlcUsageError(f"--set needs the .dln source of {artifact}, and {graph.source_path or 'it'} "
                            "is not there", code="E103", hint="pass the .dln file instead of the compiled artifact")
    try:
        text: str | None = compiler.read_dln(src)
    except DlcError:
        text = None             # not UTF-8 any more, unreadable: not the source it was compiled from
    if text is None or (graph.source_sha256
                        and hashlib.sha256(text.encode("utf-8")).hexdigest() != graph.source_sha256):
        raise DlcUsageError(f"--set needs the .dln source of {artifact}, and {src} changed since it was compiled",
                            code="E103", hint=f"run `dlc compile {src}` again, or pass {src} instead")
    # on top of the artifact's own settings: those `dlc compile --set` gave are in it, not in the source
    new = on_top_of_run(graph, compiler.compile_source(text, str(src), overrides), overrides)
    return new, new.name, text, str(src)


def load_network(target: str | None, overrides: Mapping[str, str] | None = None) -> Network:
    """`net.dln` (compiled now), a compiled `.json` artifact, a run directory (its graph with its learned
    prompts), or None (the last `dlc compile`, via `.dlc/LAST`)."""
    overrides = dict(overrides or {})
    if target is None:
        target = str(manifest.find_last())  # E505 when nothing was compiled here
    p = Path(target)
    if p.is_dir():
        run = RunDir.open(p)
        graph = graph_of_run(run, prompts="learned")
        cfg = run.config()
        source = run.source_text()
        if overrides:
            if source is None:
                raise DlcUsageError(f"--set needs the run's .dln source, and {run.path} has none", code="E103")
            rebuilt = compiler.compile_source(source, cfg.source_path or str(run.file(SOURCE)),
                                              {**cfg.overrides, **overrides})
            new = on_top_of_run(graph, rebuilt, overrides)
            return Network(new, cfg.net or graph.name, source, cfg.source_path, None,
                           differs=setting_changes(graph, new))
        return Network(graph, cfg.net or graph.name, source, cfg.source_path, None)
    if not p.exists():
        raise DlcUsageError(f"{target}: no such file", code="E104",
                            hint="pass a .dln file, a compiled .json artifact or a run directory")
    if p.suffix == ".json":
        graph = manifest.read(p)
        if overrides:
            return Network(*recompile_artifact(graph, p, overrides), None)
        return Network(graph, graph.name, _read_source(graph), graph.source_path, str(p))
    graph = compiler.compile_file(str(p), overrides)
    return Network(graph, graph.name, p.read_text(encoding="utf-8"), str(p), None)


def on_top_of_run(run_graph: Graph, rebuilt: Graph, overrides: Mapping[str, str]) -> Graph:
    """`--set` on a run applies on top of the run's own resolved settings, not on its source's: `rebuilt` is the
    source compiled with the run's recorded overrides plus the new ones, but settings a compiled artifact carried
    (`dlc compile --set` before `dlc fit`) are not in the source. So every setting is the run's (its graph.json, as
    trained), except what the new overrides name: fit, data, model and simple layer keys one by one (the whole data
    block for a data source key; the rebuilt layer, with the run's learned prompt and offsets, for a template,
    output or backward key) or the output. Also used for `--set`
    on a compiled artifact, whose `dlc compile --set` values are likewise not in its source."""
    from dlc.lang import schema

    keys = [k.split(".") for k in overrides]

    def taken(block: str, old: Any, new: Any, names: Sequence[str]) -> Any:
        """`old` with the keys `names` of `block` taken from `new`."""
        ks = schema.keys(block)
        return schema.with_values(old, {ks[k]: schema.value_of(new, ks[k]) for k in names if k in ks})

    def named(block: str, name: str | None = None) -> list[str]:
        """The keys of one block (`fit`, or model/layer NAME) the overrides set directly."""
        head = [block] if name is None else [block, name]
        return [k[len(head)] for k in keys if k[:len(head)] == head and len(k) == len(head) + 1]

    # a data source key (task, path, fields, data_dir) changes what the other keys mean: then the whole block
    data_keys = schema.keys("data")
    whole_data = any(k in data_keys and data_keys[k].custom for k in named("data"))
    models = dict(run_graph.models)
    for name in {k[1] for k in keys if k[0] == "model" and len(k) == 3}:
        new_m, old_m = rebuilt.models.get(name), run_graph.models.get(name)
        if new_m is not None:
            models[name] = new_m if old_m is None else taken("model", old_m, new_m, named("model", name))
    lk = schema.keys("layer")
    simple = [k.key for k in lk.values() if not k.custom]
    output_named = any(k[0] == "output" for k in keys)
    layers = dict(run_graph.layers)
    for n in {k[1] for k in keys if k[0] == "layer" and len(k) > 1} | (set(rebuilt.layers) if output_named
                                                                       else set()):
        old, lay = run_graph.layers.get(n), rebuilt.layers.get(n)
        if lay is None or old is None:
            if lay is not None:
                layers[n] = lay
            continue
        mine = named("layer", n)
        if not output_named and len(mine) == sum(k[:2] == ["layer", n] for k in keys) and set(mine) <= set(simple):
            layers[n] = taken("layer", old, lay, mine)      # simple keys only: those fields of the run's layer
            continue
        # a template, output or backward change: the rebuilt layer with the run's other simple keys (its prompt
        # among them) and its offsets where the labels are still the same
        lay = taken("layer", lay, old, [k for k in simple if k not in mine])
        if old.offsets and "offsets" not in mine and lay.output.label_names == old.output.label_names:
            lay = dataclasses.replace(lay, offsets=old.offsets)
        layers[n] = lay
    return dataclasses.replace(
        run_graph, fit=taken("fit", run_graph.fit, rebuilt.fit, named("fit")), models=models, layers=layers,
        data=rebuilt.data if whole_data else taken("data", run_graph.data, rebuilt.data, named("data")),
        **({"target": rebuilt.target, "metric": rebuilt.metric} if output_named else {}))


def setting_changes(before: Graph, after: Graph) -> tuple[str, ...]:
    """The resolved fit/data/model settings and simple layer keys that differ: "fit.seed: 42 -> 13"."""
    from dlc.lang import schema

    a, b = resolved_config(before), resolved_config(after)
    out = []
    for block in ("fit", "data"):
        for k in sorted(set(a[block]) | set(b[block])):
            if a[block].get(k) != b[block].get(k):
                out.append(f"{block}.{k}: {a[block].get(k)!r} -> {b[block].get(k)!r}")
    for name in sorted(set(a["models"]) | set(b["models"])):
        ma, mb = a["models"].get(name) or {}, b["models"].get(name) or {}
        for k in sorted(set(ma) | set(mb)):
            if ma.get(k) != mb.get(k):
                out.append(f"model.{name}.{k}: {ma.get(k)!r} -> {mb.get(k)!r}")
    for n in sorted(set(before.layers) & set(after.layers)):
        a_l, b_l = before.layers[n], after.layers[n]
        for k in schema.keys("layer").values():
            if k.custom or k.key == "prompt":
                continue
            va, vb = schema.value_of(a_l, k), schema.value_of(b_l, k)
            if va != vb:
                out.append(f"layer.{n}.{k.key}: {va!r} -> {vb!r}")
        if a_l.prompt != b_l.prompt:
            out.append(f"layer.{n}.prompt: changed")
    return tuple(out)


def graph_of_run(run: RunDir, *, prompts: str = "learned") -> Graph:
    """The graph a run trained, verified against the hash recorded when it started; with prompts="learned" the
    prompts are the run's result (or, for an unfinished run, its best prompts so far)."""
    cfg = run.config()
    try:
        graph = manifest.from_json(run.graph_json())
    except DlcError as e:
        raise DlcArtifactError(f"corrupted run directory: {run.path / GRAPH}: {e.message}", code="E502") from None
    if cfg.graph_sha256 not in graph_identities(graph):
        raise DlcArtifactError(f"corrupted run directory: {run.path / GRAPH} does not match the hash in {CONFIG}",
                               code="E502", hint="the artifact was edited; start a new run with `dlc fit`")
    if prompts == "learned":
        res = run.result()
        learned: Mapping[str, str] | None = None
        offsets: Mapping[str, Mapping[str, float]] = {}
        if res is not None:
            learned, offsets = res.prompts, res.offsets
        else:
            ck = run.checkpoint()
            if ck is not None:
                learned = ck.best_prompts
                offsets = {n: dict(zip(graph.layers[n].output.label_names, v))
                           for n, v in ck.best_offsets.items() if n in graph.layers and v}
        if learned:
            graph = with_prompts(graph, learned, offsets)
    return graph


def with_prompts(graph: Graph, prompts: Mapping[str, str],
                 offsets: Mapping[str, Mapping[str, float]] | None = None) -> Graph:
    """The graph with learned parameters: prompts, and calibration offsets {layer: {label: b}}."""
    layers = dict(graph.layers)
    for node, text in prompts.items():
        if node in layers:
            layers[node] = dataclasses.replace(layers[node], prompt=text)
    for node, offs in (offsets or {}).items():
        if node in layers:
            order = layers[node].output.label_names
            layers[node] = dataclasses.replace(layers[node], offsets=tuple(
                (n, float(offs[n])) for n in order if n in offs))
    return dataclasses.replace(graph, layers=layers)

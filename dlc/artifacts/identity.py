"""Identities of what a run trains: the network (graph_identity), its fit/data/model blocks (config_identity) and
its data splits (data_identity). A resume compares them to say *which* of the three changed."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from dlc.artifacts.canonical import canonical_sha256
from dlc.ir import Example, Graph


def graph_identity(graph: Graph) -> str:
    """sha256 of the network itself (layers, templates, prompts, inputs, output, metric), excluding the fit/data/
    model blocks (hashed separately by `config_identity`, so a resume can say *which* one changed) and provenance.
    The posterior-sample settings are hashed by what they do (`_posterior_effect`), so a network whose samples run as
    they did before those settings existed keeps the hash it had then."""
    doc = _network_doc(graph)
    for name, node in doc.get("nodes", {}).items():
        _posterior_effect(graph, name, node)
    return canonical_sha256(doc)


def graph_identities(graph: Graph) -> tuple[str, ...]:
    """Every hash a run of this network may have recorded: `graph_identity` first, then the one dlc wrote between
    4a0a5e9 and the hashing by effect (key `posterior_max_tokens` kept unless equal to `backward.max_tokens`, on every
    layer), when the network means what it meant then. A recorded hash is checked against all of them."""
    current = graph_identity(graph)
    if any(_sampled(graph, n) and graph.layers[n].posterior_stop() != graph.layers[n].backward.stop
           for n in graph.layers):
        return (current,)                  # its samples end at a layer's own stop: they did not then
    doc = _network_doc(graph)
    for node in doc.get("nodes", {}).values():
        back = node.get("backward")
        if isinstance(back, dict):
            back.pop("posterior_layer_stop", None)
            if back.get("posterior_max_tokens") == back.get("max_tokens"):
                back.pop("posterior_max_tokens")
    return tuple(dict.fromkeys((current, canonical_sha256(doc))))


def _network_doc(graph: Graph) -> dict[str, Any]:
    from dlc.artifacts import manifest

    doc = manifest.to_json(graph)
    for k in ("generated_at", "dlc_version", "source", "models", "fit", "data"):
        doc.pop(k, None)
    for node in doc.get("nodes", {}).values():
        node.pop("span", None)          # comments/layout edits do not change the network
    for t in doc.get("templates", {}).values():
        t.pop("path", None)             # a built-in template moves with the installation; its text is what counts
    return doc


def _sampled(graph: Graph, name: str) -> bool:
    """Whether the fit draws posterior samples of this layer (a hidden layer that a layer reads, Alg. 3)."""
    return name != graph.output and bool(graph.children(name))


def _posterior_effect(graph: Graph, name: str, node: dict[str, Any]) -> None:
    """Replace the posterior-sample keys of a node's `backward` by what they do (`Layer.posterior_max_tokens`,
    `Layer.posterior_stop`), and leave them out where they do what every network did before they existed (samples
    up to `backward.max_tokens`, ending at `backward.stop`), or nothing at all (a layer that is never sampled)."""
    back = node.get("backward")
    if not isinstance(back, dict):
        return
    back.pop("posterior_max_tokens", None)
    back.pop("posterior_layer_stop", None)
    if not _sampled(graph, name):
        return
    layer = graph.layers[name]
    if layer.posterior_max_tokens() != layer.backward.max_tokens:
        back["posterior_max_tokens"] = layer.posterior_max_tokens()
    if layer.posterior_stop() != layer.backward.stop:
        back["posterior_layer_stop"] = True


# Model keys added after runs existed: at their default they are left out of the identity, so the runs started
# before them (and the one being resumed) keep their config hash.
_LATER_MODEL_KEYS = {"max_retries": 6}


def _model_json(m: Any) -> dict[str, Any]:
    d = _jsonable(dataclasses.asdict(m))
    for key, default in _LATER_MODEL_KEYS.items():
        if d.get(key) == default:
            d.pop(key)
    return d


def resolved_config(graph: Graph) -> dict[str, Any]:
    """The fit, data and model blocks as plain JSON (data_dir excluded: it is where the files are, not what)."""
    data = dataclasses.asdict(graph.data)
    data.pop("data_dir", None)
    return {"fit": _jsonable(dataclasses.asdict(graph.fit)), "data": _jsonable(data),
            "models": {k: _model_json(v) for k, v in sorted(graph.models.items())}}


def config_identity(graph: Graph) -> str:
    return canonical_sha256(resolved_config(graph))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def split_fingerprint(examples: Sequence[Example]) -> str:
    return canonical_sha256([[e.id, dict(sorted(e.inputs.items())), e.target] for e in examples])


def data_identity(splits: Any) -> dict[str, Any]:
    return {name: {"n": len(getattr(splits, name)), "sha256": split_fingerprint(getattr(splits, name))}
            for name in ("train", "dev", "test")}

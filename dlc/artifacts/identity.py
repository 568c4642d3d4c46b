"""Identities of what a run trains: the network (graph_identity), its fit/data/model blocks (config_identity) and
its data splits (data_identity). A resume compares them to say *which* of the three changed."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from dlc.artifacts.canonical import canonical_sha256
from dlc.ir import Example, Graph


def graph_identity(graph: Graph) -> str:
    """sha256 of the network itself (layers, templates, prompts, inputs, output, metric), excluding the fit/data/
    model blocks (hashed separately by `config_identity`, so a resume can say *which* one changed) and provenance."""
    from dlc.artifacts import manifest

    doc = manifest.to_json(graph)
    for k in ("generated_at", "dlc_version", "source", "models", "fit", "data"):
        doc.pop(k, None)
    for node in doc.get("nodes", {}).values():
        node.pop("span", None)          # comments/layout edits do not change the network
        back = node.get("backward")
        if isinstance(back, dict) and back.get("posterior_max_tokens") == back.get("max_tokens"):
            # the cap every artifact had before the key existed: their recorded hashes still verify
            back.pop("posterior_max_tokens")
    for t in doc.get("templates", {}).values():
        t.pop("path", None)             # a built-in template moves with the installation; its text is what counts
    return canonical_sha256(doc)


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

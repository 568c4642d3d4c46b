"""Opening the models a graph names (one LM per distinct configuration), closing them, and their usage accounting."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from dlc.artifacts.canonical import canonical_sha256
from dlc.artifacts.identity import _jsonable
from dlc.ir import Graph, ModelConfig
from dlc.lm.base import LM, Usage
from dlc.lm.registry import check_env, open_lm

USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens", "cache_hits")


def _model_key(cfg: ModelConfig) -> str:
    d = dataclasses.asdict(cfg)
    d.pop("name", None)
    return canonical_sha256(_jsonable(d))


def open_lms(graph: Graph, *, no_cache: bool = False, cache_dir: str | None = None) -> dict[str, LM]:
    """One LM per distinct model configuration (two names for the same weights share one loaded model), mapped
    from every model name the graph uses."""
    names = set(graph.models) | {graph.layers[n].model for n in graph.order} | \
        {graph.layers[n].backward_model for n in graph.order}
    by_key: dict[str, LM] = {}
    lms: dict[str, LM] = {}
    cfgs = {name: graph.models.get(name) or ModelConfig(name=name) for name in sorted(names)}
    for cfg in cfgs.values():     # every model's environment first: no model is loaded when another cannot open
        check_env(cfg)
    try:
        for name, cfg in cfgs.items():
            key = _model_key(cfg)
            if key not in by_key:
                by_key[key] = open_lm(cfg, cache_dir=cache_dir, no_cache=no_cache)
            lms[name] = by_key[key]
    except BaseException:
        close_lms(by_key)
        raise
    return lms


def unique_lms(lms: Mapping[str, LM]) -> list[LM]:
    seen: dict[int, LM] = {}
    for lm in lms.values():
        seen.setdefault(id(lm), lm)
    return list(seen.values())


def close_lms(lms: Mapping[str, LM]) -> None:
    for lm in unique_lms(lms):
        try:
            lm.close()
        except Exception:  # closing is best effort; a failure here must not hide the run's result
            pass


def usage_totals(lms: Mapping[str, LM], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Usage summed over the distinct LMs, plus `base` (what earlier processes of a resumed run spent)."""
    tot = {k: int((base or {}).get(k, 0) or 0) for k in USAGE_KEYS}
    per_model: dict[str, dict[str, int]] = {m: dict(v) for m, v in ((base or {}).get("per_model") or {}).items()}
    for lm in unique_lms(lms):
        u: Usage = lm.usage
        row = per_model.setdefault(lm.model_id, {k: 0 for k in USAGE_KEYS})
        for k in USAGE_KEYS:
            v = int(getattr(u, k, 0) or 0)
            tot[k] += v
            row[k] = row.get(k, 0) + v
    tot["per_model"] = per_model
    # what local backends really computed (bench/ cost columns); absent for remote-only runs
    base_work = (base or {}).get("backend") or {}
    works = [w() for w in (getattr(lm, "work", None) for lm in unique_lms(lms)) if callable(w)]
    if works or base_work:
        uniques = [w.unique_tokens for w in works]
        tracked = all(u is not None for u in uniques) and (not base_work or base_work.get("unique_tokens") is not None)
        tot["backend"] = {
            "decoded_tokens": int(base_work.get("decoded_tokens", 0)) + sum(w.decoded_tokens for w in works),
            # a resumed run sums the processes' tries: an upper bound of the true minimum
            "unique_tokens": (int(base_work.get("unique_tokens") or 0) + sum(u or 0 for u in uniques)) if tracked
            else None,
            "seconds": round(float(base_work.get("seconds", 0.0)) + sum(w.seconds for w in works), 3),
            "decode_seconds": round(float(base_work.get("decode_seconds", 0.0))
                                    + sum(w.decode_seconds for w in works), 3),
            "phases": _sum_phases([base_work.get("phases") or {}, *(w.phases for w in works)]),
            "decode_shapes": _sum_shapes([base_work.get("decode_shapes") or {}, *(w.decode_shapes for w in works)]),
        }
    return tot


def _sum_rows(tables: Sequence[Mapping[str, Any]], fields: Sequence[str],
              optional: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """{name: {field: number}} tables summed name by name (seconds rounded to ms, the rest integers). An `optional`
    field that one of a name's rows lacks (booked by an earlier dlc, then resumed) is left out of that name's sum:
    a partial total would read as the whole."""
    out: dict[str, dict[str, float]] = {}
    lacking: dict[str, set[str]] = {}
    for table in tables:
        for name, row in table.items():
            acc = out.setdefault(name, dict.fromkeys(fields, 0))
            row = row if isinstance(row, Mapping) else {}
            lacking.setdefault(name, set()).update(k for k in optional if k not in row)
            for k in fields:
                acc[k] += row.get(k, 0)
    return {k: {kk: (round(float(v), 3) if kk == "seconds" else int(v)) for kk, v in row.items()
                if kk not in lacking[k]} for k, row in sorted(out.items())}


def _sum_phases(tables: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-phase backend work summed over processes/models."""
    return _sum_rows(tables, ("seconds", "decoded_tokens", "completion_tokens"))


def _sum_shapes(tables: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per-phase llama_decode shapes (`BackendWork.decode_shapes`) summed over processes/models."""
    phases = sorted({p for t in tables for p, shapes in t.items() if isinstance(shapes, Mapping)})
    fields = ("tokens", "seconds", "calls", "logits", "context")
    return {p: _sum_rows([t[p] for t in tables if isinstance(t.get(p), Mapping)], fields, ("logits", "context"))
            for p in phases}


def backend_info(graph: Graph, lms: Mapping[str, LM]) -> dict[str, Any]:
    out = {}
    for name, lm in sorted(lms.items()):
        cfg = graph.models.get(name) or ModelConfig(name=name)
        out[name] = {"backend": cfg.backend,
                     "model": cfg.model, "model_id": lm.model_id,
                     "capabilities": dataclasses.asdict(lm.capabilities)}
    return out

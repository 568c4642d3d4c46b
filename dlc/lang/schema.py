"""The keys of every `.dln` block, derived from the one declaration of each setting: an `ir.setting(...)` field.

A block is an IR dataclass (`BLOCKS`); its keys are the fields made with `ir.setting` (the Generation's fields are
keys of `layer` too). For each key this module gives its type (`kind`, from the type hint unless the field says it),
default, range and allowed values. From it are derived:

    dlc.lang.check.schema      the coercer of every key (E310 type, E311 range via `out_of_range`, E314 allowed)
    dlc.lang.overrides         the `--set` keys
    dlc.lang.compiler          the lowering of the simple keys (`fill`; absent keys keep the dataclass default)
    dlc.train.config           the checks of a FitConfig built in Python (same ranges, same messages' rule, E311)

Keys lowered with context (`custom=True`) have a resolver in the compiler: layer.template, layer.fixed,
layer.output, layer.calibration (default "fit" on a choice output layer), layer.offsets, backward.prompt,
backward.posterior, data.task, data.path, data.data_dir, data.fields, output.target, output.metric, fit.train.
The manifest codec (`dlc.artifacts.manifest`) walks the same dataclasses' fields.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal, Mapping

from dlc import ir

# block name -> the IR dataclass its keys fill (`output y { ... }` sets the graph's target and metric)
BLOCKS: dict[str, type] = {"layer": ir.Layer, "backward": ir.Backward, "model": ir.ModelConfig,
                           "data": ir.DataConfig, "output": ir.Graph, "fit": ir.FitConfig}


@dataclass(frozen=True)
class Key:
    key: str                                   # as written in the .dln block
    owner: type                                # the IR dataclass holding the field
    field: str
    kind: str                                  # bool int number choice text text_list name names env raw
    default: Any                               # dataclasses.MISSING when the IR has none (a custom key)
    range: ir.Range | None                     # (lo, hi, lo exclusive) of a number
    allowed: tuple[str, ...]                   # the values of a choice
    custom: bool                               # lowered by the compiler with context


def _kind(t: Any) -> str:
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "number"
    if typing.get_origin(t) is Literal:
        return "choice"
    if typing.get_origin(t) is tuple:
        return "text_list"
    return "text"                              # str, str | None (and a type this schema does not know yet)


def _keys_of(cls: type) -> list[Key]:
    hints = typing.get_type_hints(cls)
    out: list[Key] = []
    for f in fields(cls):
        if f.metadata.get("flatten"):
            out += _keys_of(hints[f.name])
        if not f.metadata.get("dln"):
            continue
        t, md = hints[f.name], f.metadata
        kind = md["kind"] or _kind(t)
        out.append(Key(md["key"] or f.name, cls, f.name, kind, f.default, md["range"],
                       typing.get_args(t) if kind == "choice" else (), md["custom"]))
    return out


@functools.cache
def keys(block: str) -> dict[str, Key]:
    """The keys of a block in declaration order (`layer`, `backward`, `model`, `data`, `output`, `fit`)."""
    return {k.key: k for k in _keys_of(BLOCKS[block])}


def ranges(block: str) -> dict[str, ir.Range]:
    return {k.key: k.range for k in keys(block).values() if k.range is not None}


def fill(block: str, values: Mapping[str, Any], owner: type | None = None) -> dict[str, Any]:
    """The checked values of a block's simple (not custom) keys as keyword arguments of `owner` (default: the
    block's dataclass). Keys not set are left out, so the dataclass default applies."""
    owner = owner or BLOCKS[block]
    return {k.field: values[k.key] for k in keys(block).values()
            if not k.custom and k.owner is owner and k.key in values}


def _in_generation(obj: Any, k: Key) -> bool:
    return k.owner is ir.Generation and not isinstance(obj, ir.Generation)


def value_of(obj: Any, k: Key) -> Any:
    """Key k's value on its block's IR object (a layer's Generation keys live in `layer.generation`)."""
    return getattr(obj.generation if _in_generation(obj, k) else obj, k.field)


def with_values(obj: Any, values: Mapping[Key, Any]) -> Any:
    """A copy of a block's IR object with these keys set (a layer's Generation keys in its `generation`)."""
    own = {k.field: v for k, v in values.items() if not _in_generation(obj, k)}
    gen = {k.field: v for k, v in values.items() if _in_generation(obj, k)}
    if gen:
        own["generation"] = dataclasses.replace(obj.generation, **gen)
    return dataclasses.replace(obj, **own)


def out_of_range(x: float, rng: ir.Range, shown: str | None = None) -> str | None:
    """The one range rule (E311): "must be at least 1, got 0", or None when x is in range. `shown`: the value as
    written, for an exclusive lower bound."""
    lo, hi, lo_open = rng
    if lo is not None and lo_open and x <= lo:
        return f"must be greater than {_num(lo)}, got {shown if shown is not None else _num(x)}"
    if lo is not None and x < lo:
        return f"must be at least {_num(lo)}, got {_num(x)}"
    if hi is not None and x > hi:
        return f"must be at most {_num(hi)}, got {_num(x)}"
    return None


def _num(x: float) -> str:
    """A number as a message shows it: an integer whole (4294967295, not 4.29497e+09), a float in %g."""
    return str(x) if isinstance(x, int) else format(x, "g")


__all__ = ["BLOCKS", "Key", "keys", "ranges", "fill", "out_of_range", "value_of", "with_values"]

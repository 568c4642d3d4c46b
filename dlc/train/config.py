"""Checks of a FitConfig against a graph before any LLM call.

The ranges and allowed values are the compiler's own (`dlc.lang.check.FIT_RANGES` and the Literal types of
`ir.FitConfig`), with the same codes (E311 out of range, E314 not an allowed value): a `.dln` file is checked by
the compiler, a FitConfig built in Python by this gate, and both say the same thing.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Literal

from dlc.errors import DlcFitError, DlcSemanticError, did_you_mean
from dlc.ir import FitConfig, Graph
from dlc.lang.check import FIT_RANGES


def _range_error(name: str, val: float, lo: float | None, hi: float | None, lo_open: bool) -> str | None:
    if lo is not None and (val <= lo if lo_open else val < lo):
        return f"fit.{name} must be {'greater than' if lo_open else 'at least'} {lo:g}, got {val:g}"
    if hi is not None and val > hi:
        return f"fit.{name} must be at most {hi:g}, got {val:g}"
    return None


def check_config(graph: Graph, config: FitConfig) -> tuple[str, ...]:
    """Reject impossible settings up front (one line with a fix); returns the layers to train, in topological
    order."""
    hints = typing.get_type_hints(FitConfig)
    for f in dataclasses.fields(FitConfig):
        val = getattr(config, f.name)
        t = hints[f.name]
        if typing.get_origin(t) is Literal:
            allowed = typing.get_args(t)
            if val not in allowed:
                raise DlcSemanticError(f"fit.{f.name} = '{val}' is not one of {', '.join(map(str, allowed))}",
                                  code="E314", hint=f"set fit.{f.name} = {allowed[0]}")
        elif f.name in FIT_RANGES and isinstance(val, (int, float)) and not isinstance(val, bool):
            msg = _range_error(f.name, float(val), *FIT_RANGES[f.name])
            if msg:
                raise DlcSemanticError(msg, code="E311", hint=f"the default is fit.{f.name} = {f.default}")
    if config.n_shots > 0 and config.iters > 0:   # the compiler's E330, for a config built in Python
        raise DlcSemanticError(f"fit.n_shots = {config.n_shots} with fit.iters = {config.iters}: n-shot demonstrations "
                               "are an evaluation baseline, and training would validate with them but train without "
                               "them", code="E330",
                               hint="set iters = 0 for the n-shot baseline, or n_shots = 0 to train prompts")
    if config.train:
        for n in config.train:
            if n not in graph.layers:
                raise DlcFitError(f"train names unknown layer '{n}'", code="E711",
                                  hint=did_you_mean(n, graph.layers) or f"layers: {', '.join(graph.order)}")
        return tuple(n for n in graph.order if n in config.train)
    return tuple(n for n in graph.order if graph.layers[n].trainable)

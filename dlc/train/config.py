"""Checks of a FitConfig against a graph before any LLM call.

The ranges and allowed values are the compiler's own (the `ir.setting` declarations of `ir.FitConfig`, read through
`dlc.lang.schema`, and its one range rule `out_of_range`), with the same codes (E311 out of range, E314 not an
allowed value): a `.dln` file is checked by the compiler, a FitConfig built in Python by this gate, and both say the
same thing.
"""
from __future__ import annotations

from dlc.errors import DlcFitError, DlcSemanticError, did_you_mean
from dlc.ir import FitConfig, Graph
from dlc.lang import schema


def check_config(graph: Graph, config: FitConfig) -> tuple[str, ...]:
    """Reject impossible settings up front (one line with a fix); returns the layers to train, in topological
    order."""
    for k in schema.keys("fit").values():
        val = getattr(config, k.field)
        if k.kind == "choice":
            if val not in k.allowed:
                raise DlcSemanticError(f"fit.{k.key} = '{val}' is not one of {', '.join(map(str, k.allowed))}",
                                       code="E314", hint=f"set fit.{k.key} = {k.allowed[0]}")
        elif k.range is not None and isinstance(val, (int, float)) and not isinstance(val, bool):
            problem = schema.out_of_range(float(val), k.range)
            if problem:
                raise DlcSemanticError(f"fit.{k.key} {problem}", code="E311",
                                       hint=f"the default is fit.{k.key} = {k.default}")
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

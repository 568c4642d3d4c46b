"""Checks of a fit that need its data, run before the run directory exists (issue 16: nothing half-written).

The compiler checks what the .dln alone can say; the data loader checks the files and the field mapping. What is
left can only fail once examples meet the network: a dataset target that is none of the output layer's labels
(E819), and a forward template that compiles but fails to render (a sandboxed attribute, a division by zero: E353,
or a render bound: E359). Both used to surface inside the first iteration (or, for the test split, after the
whole fit), leaving a run directory with a config and no training. Here they are tried on the examples first.
"""
from __future__ import annotations

from typing import Any, Mapping

from dlc.ir import Example, Graph

_EXAMPLES_RENDERED = 3       # per split: a template that fails on data fails on the first rows in practice


def check_before_run(graph: Graph, splits: Any) -> None:
    """Raise the DlcError a fit of `graph` on `splits` would raise in its first requests, before anything is
    written: every target of every split against the output's labels, then each layer's forward template rendered
    with the first examples of each split (a hidden parent's text stands in as a placeholder)."""
    from dlc.engine.forward import render_forward, resolve_targets

    for name in ("train", "dev", "test"):
        resolve_targets(graph, splits.split(name))           # E819 naming the example and the labels
    prompts = graph.prompts()
    for name in ("train", "dev", "test"):
        for ex in splits.split(name)[:_EXAMPLES_RENDERED]:
            texts = _texts(graph, ex)
            for node in graph.order:
                render_forward(graph, graph.layers[node], prompts[node], texts)   # E352/E353/E359, in node


def check_capabilities(graph: Graph, lms: Mapping[str, Any]) -> None:
    """E628 before the run directory exists when a trained choice layer's model gives no prompt log-probabilities
    (as probed) and the fit scores that layer's prompts by log p(label): the rule dlc.engine.prompts applies at
    the first candidate scoring, asked of the opened models here."""
    from dlc.engine.forward import scores_labels
    from dlc.errors import DlcLMError
    from dlc.train.config import check_config

    cfg = graph.fit
    if cfg.iters <= 0:
        return
    for node in check_config(graph, cfg):
        layer = graph.layers[node]
        lm = lms.get(layer.model)
        if layer.output.kind != "choice" or lm is None or scores_labels(lm):
            continue
        is_out = node == graph.output
        accuracy = cfg.output_scoring == "accuracy" if is_out else cfg.hidden_scoring == "accuracy"
        if not accuracy or (is_out and cfg.trust_factor > 0):
            raise DlcLMError(f"model '{layer.model}' gives no prompt log-probabilities, which scoring the prompts of "
                             f"choice layer '{node}' by log p(label) needs", code="E628", node=node,
                             hint=f"set fit.{'output' if is_out else 'hidden'}_scoring = accuracy"
                                  f"{' and fit.trust_factor = 0' if is_out else ''}: the layer is then scored by its "
                                  "generated answers")


def _texts(graph: Graph, ex: Example) -> dict[str, str]:
    """Every node's text for a dry render: the example's inputs, and a placeholder for each layer's output."""
    texts = {name: f"(the output of layer {name})" for name in graph.order}
    texts.update(ex.inputs)
    return texts

"""Forward executor: runs a compiled graph on a batch in topological order and records a trace.

One function renders a layer's context (`layer_context`); the forward pass, posterior weighting and prompt scoring
all go through it, so a layer is always scored with exactly the inputs its forward pass sees (the fix of
dln-reference §6.2.2: `strip_options_for_hidden` applies identically in both). Calls are batched per layer (one
`generate` or `score` call per layer per batch) and identical requests inside a batch are sent once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from dlc.lang import templates
from dlc.errors import DlcError, DlcFitError, DlcLMError
from dlc.ir import Example, Graph, Layer
from dlc.lm.base import LM, ChatPrompt, GenerateRequest, GenerateResult, Prompt, ScoreRequest, ScoreResult
from dlc.engine.calibration import apply_offsets
from dlc.engine.labels import label_logdist_from, label_requests, verbalizers
from dlc.engine.metrics import final_number, format_number, is_correct, match_label, normalize
from dlc.rng import Rng
from dlc.engine.vi import argmax, reduce_logprobs


def strip_options(text: str) -> str:
    """Cut an input before "Options:" (strip_options_for_hidden: hidden layers reason without the answer list)."""
    i = text.find("Options:")
    return text[:i].rstrip() if i >= 0 else text


def prompt_to_json(p: Prompt) -> Any:
    if isinstance(p, ChatPrompt):
        return {"system": p.system, "user": p.user, "prefix": p.prefix}
    return p


def layer_variables(graph: Graph, layer: Layer, prompt: str, texts: Mapping[str, str], *,
                    strip_hidden_options: bool = False) -> dict[str, Any]:
    """The forward-template variables of `layer` (ir.py contract): prompt, input, hidden, inputs, parents ({name,
    text, input: is it a graph input} per parent), and each parent under its own name. With strip_hidden_options,
    a hidden layer sees graph inputs cut before "Options:"."""
    vals = []
    for p in layer.parents:
        t = texts[p]
        if strip_hidden_options and layer.name != graph.output and p in graph.inputs:
            t = strip_options(t)
        vals.append(t)
    variables: dict[str, Any] = {p: v for p, v in zip(layer.parents, vals)}
    variables.update(prompt=prompt, input=vals[0] if vals else "", hidden="\n\n".join(vals[1:]), inputs=vals,
                     parents=[{"name": p, "text": v, "input": p in graph.inputs}
                              for p, v in zip(layer.parents, vals)])
    return variables


def render_forward(graph: Graph, layer: Layer, prompt: str, texts: Mapping[str, str], *,
                   strip_hidden_options: bool = False) -> str:
    try:
        return templates.render(layer.template.text, layer_variables(graph, layer, prompt, texts,
                                                                     strip_hidden_options=strip_hidden_options))
    except DlcError as e:
        raise e.with_node(layer.name)


def as_prompt(layer: Layer, text: str) -> Prompt:
    """What is sent for a layer: a ChatPrompt (chat format) or the raw string followed by the answer prefix."""
    if layer.format == "chat":
        return ChatPrompt(user=text, system=layer.system, prefix=layer.answer_prefix)
    return text + layer.answer_prefix


def as_backward_prompt(layer: Layer, text: str) -> Prompt:
    """A backward (proposal) request: the rendered template as a plain user turn, or raw text."""
    return ChatPrompt(user=text) if layer.format == "chat" else text


def layer_context(graph: Graph, layer: Layer, prompt: str, texts: Mapping[str, str], *,
                  strip_hidden_options: bool = False) -> Prompt:
    return as_prompt(layer, render_forward(graph, layer, prompt, texts, strip_hidden_options=strip_hidden_options))


# ---------------------------------------------------------------------------------------------------- LLM batches
def lm_for(lms: Mapping[str, LM], name: str, node: str) -> LM:
    try:
        return lms[name]
    except KeyError:
        raise DlcFitError(f"no LLM named '{name}' was opened for layer '{node}'", code="E701", node=node,
                          hint=f"pass an LM for model '{name}' (models opened: {', '.join(sorted(lms)) or 'none'})"
                          ) from None


def score_batch(lm: LM, requests: Sequence[ScoreRequest], node: str = "") -> list[ScoreResult]:
    """Score requests in one call, sending each distinct (prompt, continuation) once (§6.2.13)."""
    if not requests:
        return []
    index: dict[tuple[Any, str], int] = {}
    unique: list[ScoreRequest] = []
    for r in requests:
        key = (r.prompt, r.continuation)
        if key not in index:
            index[key] = len(unique)
            unique.append(r)
    try:
        res = lm.score(unique)
    except DlcLMError as e:
        raise e.with_node(node) if node else e
    return [res[index[(r.prompt, r.continuation)]] for r in requests]


def generate_batch(lm: LM, requests: Sequence[GenerateRequest], node: str = "") -> list[GenerateResult]:
    """Generate in one call; identical requests (same prompt, settings and seed) are sent once."""
    if not requests:
        return []
    index: dict[tuple[Any, ...], int] = {}
    unique: list[GenerateRequest] = []
    keys = []
    for r in requests:
        key = (r.prompt, r.max_tokens, r.temperature, r.top_p, r.stop, r.n, r.seed)
        keys.append(key)
        if key not in index:
            index[key] = len(unique)
            unique.append(r)
    try:
        res = lm.generate(unique)
    except DlcLMError as e:
        raise e.with_node(node) if node else e
    return [res[index[k]] for k in keys]


# ---------------------------------------------------------------------------------------------------- choice by generation
CHOICE_MAX_TOKENS = 32     # a generated answer of a choice layer: enough to spell a verbalizer, not an essay


def scores_labels(lm: LM) -> bool:
    """Can `lm` score continuations (prompt log-probs)? Chat-only hosted models cannot (the OpenAI backend's probe
    says so in `capabilities`); their choice layers then answer by generation (`choice_requests`)."""
    caps = getattr(lm, "capabilities", None)
    return caps is None or bool(getattr(caps, "prompt_logprobs", True))


def choice_requests(layer: Layer, contexts: Sequence[Prompt], tag: str) -> list[GenerateRequest]:
    """A choice layer on a backend without prompt log-probs: one greedy generation per context, at most
    CHOICE_MAX_TOKENS tokens (or the layer's max_tokens when smaller), mapped to a label by `label_of_text`."""
    g = layer.generation
    return [GenerateRequest(prompt=c, max_tokens=max(1, min(g.max_tokens, CHOICE_MAX_TOKENS)), temperature=0.0,
                            stop=g.stop, n=1, seed=0, tag=tag) for c in contexts]


def label_of_text(layer: Layer, text: str) -> str:
    """The label a generated answer names, or "" (no label: counted wrong). The whole text naming a label or a
    verbalizer (`match_label`: case, punctuation, "Option (B)"), else the label whose verbalizer the text starts
    with, on a word boundary ("positive. The review praises..." -> positive); the longest verbalizer wins, and two
    labels tied for the longest are no answer."""
    labels = layer.output.labels
    name = match_label(text, labels)
    if name is not None:
        return name
    words = normalize(text)
    best: list[tuple[int, str]] = []
    for lab in labels:
        for v in (lab.name, *lab.verbalizers):
            nv = normalize(v)
            if nv and (words == nv or words.startswith(nv + " ")):
                best.append((len(nv), lab.name))
    if not best:
        return ""
    top = max(n for n, _ in best)
    names = {lab for n, lab in best if n == top}
    return names.pop() if len(names) == 1 else ""


@dataclass(frozen=True)
class ScoreOpts:
    """How log-probabilities are reduced and labels aggregated (FitConfig.hidden_logp/output_logp/label_agg), and
    the calibration offsets of choice layers: `offsets` overrides a layer's own (`Layer.offsets`, a trained
    network's) with the trainer's current ones; an empty vector means uncalibrated."""

    output_logp: str = "sum"
    hidden_logp: str = "mean"
    label_agg: str = "logsumexp"
    offsets: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def offsets_for(self, layer: Layer) -> list[float] | None:
        for name, b in self.offsets:
            if name == layer.name:
                return list(b) or None
        return layer.offset_vector()

    def with_offsets(self, offsets: Mapping[str, Sequence[float] | None]) -> "ScoreOpts":
        d = dict(self.offsets)
        d.update({k: tuple(v or ()) for k, v in offsets.items()})
        return replace(self, offsets=tuple(sorted(d.items())))


def is_empty_text(layer: Layer, text: str) -> bool:
    """Is `text` an empty (or blank) output of a generative layer? Its log-probability as a whole output is
    log p(end-of-text | context), which the LM interface cannot ask for (it scores continuations, and an empty one
    has no token; a mean over zero tokens would say log p = 0, the most likely text of all). The engine leaves such
    a text out wherever its log-probability is needed (hidden.infer_hidden, prompts.score_candidates); a choice
    layer's label is never empty."""
    return layer.output.kind != "choice" and not text.strip()


def target_logp_requests(graph: Graph, layer: Layer, context: Prompt, target: str, tag: str) -> list[ScoreRequest]:
    """Requests needed for log p(target | context) at `layer`: every verbalizer for a choice layer (the target must
    be normalised over the label set), else the target text itself."""
    if layer.output.kind == "choice":
        return label_requests(context, layer.output.labels, tag)
    return [ScoreRequest(prompt=context, continuation=target, tag=tag)]


def target_logp_from(graph: Graph, layer: Layer, results: Sequence[ScoreResult], target: str,
                     opts: ScoreOpts, offsets: Sequence[float] | None | bool = True
                     ) -> tuple[float, list[float] | None]:
    """log p(target | context) (class-normalised for choice layers) and the label log-distribution (or None).

    A calibrated choice layer's distribution is softmax(log p + b) (engine/calibration.py) with b = `offsets`, or
    the layer's current offsets from `opts` when offsets is True, or the raw distribution when offsets is False."""
    if layer.output.kind == "choice":
        dist = label_logdist_from(results, layer.output.labels, agg=opts.label_agg, reduction=opts.output_logp)
        b = opts.offsets_for(layer) if offsets is True else (None if offsets is False else offsets)
        dist = apply_offsets(dist, b)  # type: ignore[arg-type]
        names = layer.output.label_names
        if target not in names:
            raise DlcFitError(f"target '{target}' is not a label of layer '{layer.name}'", code="E702",
                              node=layer.name, hint=f"labels are: {', '.join(names)}")
        return dist[names.index(target)], dist
    reduction = opts.output_logp if layer.name == graph.output else opts.hidden_logp
    return reduce_logprobs(results[0].logprobs, reduction), None  # -inf for an empty text (see is_empty_text)


# ---------------------------------------------------------------------------------------------------- forward
@dataclass
class NodeTrace:
    """Per-example forward record of one layer: what was sent, what came back, and its log-probabilities."""

    contexts: list[Prompt] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    label_logdist: list[list[float] | None] = field(default_factory=list)   # calibrated when offsets is set
    seeds: list[int] = field(default_factory=list)
    raw_logdist: list[list[float] | None] = field(default_factory=list)     # p_LM before the offsets
    offsets: list[float] | None = None
    generated: list[str] | None = None     # a choice layer answering by generation: the texts its labels are read
                                           # from (no label distribution then)

    def to_json(self) -> dict[str, Any]:
        d = {"contexts": [prompt_to_json(c) for c in self.contexts], "outputs": list(self.outputs),
             "label_logdist": self.label_logdist, "seeds": list(self.seeds)}
        if self.generated is not None:
            d["generated"] = list(self.generated)
        if self.offsets is not None:
            d["offsets"] = list(self.offsets)
            d["raw_logdist"] = self.raw_logdist
        return d


@dataclass
class Trace:
    """The forward pass of a batch: every node's text per example, per-layer records, predictions and 0/1 losses."""

    examples: list[Example]
    texts: dict[str, list[str]]
    nodes: dict[str, NodeTrace]
    predictions: list[str]
    correct: list[bool]

    def example_texts(self, i: int) -> dict[str, str]:
        return {n: v[i] for n, v in self.texts.items()}

    def to_json(self) -> dict[str, Any]:
        return {"ids": [e.id for e in self.examples], "targets": [e.target for e in self.examples],
                "nodes": {n: t.to_json() for n, t in self.nodes.items()},
                "predictions": list(self.predictions), "correct": list(self.correct)}


def prediction_of(graph: Graph, text: str) -> str:
    """The output layer's prediction from its output text: a label name, the text, or for a number output its final
    answer (`metrics.final_number`) spelled exactly ("1,234,000" -> "1234000", "12345.67" stays; the text itself
    when it holds no number)."""
    out = graph.layers[graph.output].output
    if out.kind == "number":
        n = final_number(text)
        return format_number(n) if n is not None else text.strip()
    return text


def output_correct(graph: Graph, text: str, target: str) -> bool:
    """Is the output layer's text right under the graph's metric? The one rule for the forward pass, posterior
    weights and candidate scoring: `number_presence` and `final_answer` read the whole text, the other metrics
    the prediction (`prediction_of`)."""
    return is_correct(graph.metric, prediction_of(graph, text), target, output=text)


def forward(graph: Graph, prompts: Mapping[str, str], lms: Mapping[str, LM], examples: Sequence[Example], *,
            temperature: float | None = 0.0, rng: Rng | None = None, seed_path: Sequence[object] = (),
            strip_hidden_options: bool = False, opts: ScoreOpts = ScoreOpts(),
            input_prefix: Sequence[str] | None = None) -> Trace:
    """Run every layer in topological order on `examples` (paper Eq. 1 read left to right).

    Text/number layers generate with their Generation settings at `temperature` (None: the layer's own); choice
    layers output argmax of the label distribution, or, on a backend without prompt log-probs, the label their
    greedy answer names ("" when none: wrong). `input_prefix[i]` (n-shot demonstrations) is prepended to the
    output layer's first parent text for example i."""
    rng = rng or Rng(0)
    texts: dict[str, list[str]] = {}
    for name in graph.inputs:
        try:
            texts[name] = [e.inputs[name] for e in examples]
        except KeyError:
            raise DlcFitError(f"an example has no value for graph input '{name}'", code="E703",
                              hint="map the dataset field to the input in the data block") from None
    nodes: dict[str, NodeTrace] = {}
    for name in graph.order:
        layer = graph.layers[name]
        nt = NodeTrace()
        for i in range(len(examples)):
            t = {p: texts[p][i] for p in layer.parents}
            if input_prefix is not None and name == graph.output and input_prefix[i]:
                t[layer.parents[0]] = input_prefix[i] + t[layer.parents[0]]
            nt.contexts.append(layer_context(graph, layer, prompts[name], t,
                                             strip_hidden_options=strip_hidden_options))
        lm = lm_for(lms, layer.model, name)
        tag = f"{name}/forward"
        if layer.output.kind == "choice" and not scores_labels(lm):
            # no prompt log-probs (a chat-only backend): generate greedily and read the label from the text
            res = generate_batch(lm, choice_requests(layer, nt.contexts, tag), name)
            nt.generated = [r.texts[0] if r.texts else "" for r in res]
            nt.outputs = [label_of_text(layer, t) for t in nt.generated]
            nt.label_logdist = [None] * len(examples)
            nt.raw_logdist = [None] * len(examples)
            nt.seeds = [0] * len(examples)
        elif layer.output.kind == "choice":
            reqs = [r for c in nt.contexts for r in label_requests(c, layer.output.labels, tag)]
            res = score_batch(lm, reqs, name)
            per = sum(len(verbalizers(lab)) for lab in layer.output.labels)
            nt.offsets = opts.offsets_for(layer)
            for i in range(len(examples)):
                raw = label_logdist_from(res[i * per:(i + 1) * per], layer.output.labels, agg=opts.label_agg,
                                         reduction=opts.output_logp)
                dist = apply_offsets(raw, nt.offsets)
                nt.raw_logdist.append(raw)
                nt.label_logdist.append(dist)
                nt.outputs.append(layer.output.labels[argmax(dist)].name)
                nt.seeds.append(0)
        else:
            g = layer.generation
            temp = g.temperature if temperature is None else temperature
            seeds = [rng.seed_for(*seed_path, "node", name, "forward", i) if temp > 0 else 0
                     for i in range(len(examples))]
            reqs = [GenerateRequest(prompt=c, max_tokens=max(1, g.max_tokens), temperature=temp, top_p=g.top_p,
                                    stop=g.stop, n=1, seed=s, tag=tag) for c, s in zip(nt.contexts, seeds)]
            res = generate_batch(lm, reqs, name)
            nt.outputs = [r.texts[0].strip() if r.texts else "" for r in res]
            nt.label_logdist = [None] * len(examples)
            nt.raw_logdist = [None] * len(examples)
            nt.seeds = seeds
        texts[name] = list(nt.outputs)
        nodes[name] = nt
    preds = [prediction_of(graph, t) for t in texts[graph.output]]
    correct = [output_correct(graph, t, e.target) for t, e in zip(texts[graph.output], examples)]
    return Trace(examples=list(examples), texts=texts, nodes=nodes, predictions=preds, correct=correct)


def resolve_targets(graph: Graph, examples: Sequence[Example]) -> list[Example]:
    """Map dataset targets of a choice output onto label names ("(A)" -> "A"); a target naming no label is a data
    error (E819, as in dlc.data.loader.align_targets) rather than a silent 0% accuracy."""
    out_layer = graph.layers[graph.output]
    if out_layer.output.kind != "choice":
        return list(examples)
    fixed = []
    for e in examples:
        name = match_label(e.target, out_layer.output.labels)
        if name is None:
            from dlc.errors import DlcDataError
            raise DlcDataError(f"target '{e.target}' of example '{e.id}' is none of the labels of '{graph.output}'",
                               code="E819", node=graph.output,
                               hint=f"labels: {', '.join(out_layer.output.label_names)}; fix the target field "
                                    "or add a verbalizer")
        fixed.append(e if name == e.target else Example(inputs=e.inputs, target=name, id=e.id))
    return fixed

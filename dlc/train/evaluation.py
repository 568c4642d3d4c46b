"""Evaluation of a network's parameters on examples: greedy forward pass, accuracy, per-class accuracy, confusion,
and — for a choice output — each example's log p(target) and raw label distribution (validation by log-likelihood,
fitting calibration offsets).

n-shot baselines prepend class-balanced demonstrations drawn per example from `shots_from` (the reference's ICL).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from dlc.engine.calibration import apply_offsets
from dlc.engine.forward import forward, render_forward, resolve_targets
from dlc.engine.hidden import score_opts
from dlc.engine.labels import verbalizers
from dlc.engine.metrics import is_correct
from dlc.engine.vi import argmax
from dlc.errors import DlcUsageError
from dlc.ir import Example, FitConfig, Graph
from dlc.lm.base import LM
from dlc.rng import Rng


@dataclass
class EvalResult:
    accuracy: float
    predictions: list[str]
    targets: list[str]
    correct: list[bool]
    ids: list[str]
    per_class: dict[str, float]
    confusion: dict[str, dict[str, int]]
    loglik: list[float] | None = None                      # choice output: log p_b(target | x) per example
    raw_logdists: list[list[float]] | None = field(default=None, repr=False)   # choice output: before offsets

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("raw_logdists")
        return d

    def to_state(self) -> dict[str, Any]:
        """Everything, raw distributions included (the trainer's checkpointed memo of dev evaluations)."""
        return asdict(self)

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> "EvalResult":
        return cls(**d)

    def scores(self, validation: str) -> list[float]:
        """Per-example validation scores: 0/1 correctness, or log p(target) (falls back to accuracy for outputs
        without a label distribution)."""
        if validation == "loglik" and self.loglik is not None:
            return list(self.loglik)
        return [1.0 if c else 0.0 for c in self.correct]


def _balanced_order(rng_choice: Any, examples: Sequence[Example], n: int) -> list[int]:
    """Round-robin over the classes in a random order, each class's examples shuffled (the reference's balance)."""
    by_class: dict[str, list[int]] = {}
    for idx, e in enumerate(examples):
        by_class.setdefault(e.target, []).append(idx)
    classes = sorted(by_class)
    rng_choice.shuffle(classes)
    for c in classes:
        rng_choice.shuffle(by_class[c])
    out: list[int] = []
    while len(out) < n and any(by_class[c] for c in classes):
        for c in classes:
            if by_class[c] and len(out) < n:
                out.append(by_class[c].pop())
    return out


def shots_prefix(graph: Graph, shots: Sequence[Example]) -> str:
    """n-shot demonstrations: each shot rendered with the output layer's own template (empty prompt) followed by
    its answer, joined by blank lines and prepended to the input (the reference's ICL baseline)."""
    layer = graph.layers[graph.output]
    if any(p not in graph.inputs for p in layer.parents):
        raise DlcUsageError("n_shots needs an output layer that reads only graph inputs (a DLN-1)", code="E116",
                            node=graph.output, hint="set n_shots = 0 for networks with hidden layers")
    demos = []
    for s in shots:
        answer = s.target
        if layer.output.kind == "choice":
            lab = next((lab for lab in layer.output.labels if lab.name == s.target), None)
            answer = verbalizers(lab)[0] if lab else s.target
        text = render_forward(graph, layer, "", {p: s.inputs[p] for p in layer.parents})
        # one space after the template's cue ("Answer: location", "Answer: The answer is (A"): the demonstrations
        # sit inside the prompt as text, where "Answer:location" reads as a typo and cost 5-shot accuracy
        demos.append(f"{text.rstrip()} {(layer.answer_prefix + answer).strip()}".strip())
    return "\n\n\n".join(demos) + "\n\n\n" if demos else ""


def evaluate(graph: Graph, prompts: Mapping[str, str], lms: Mapping[str, LM], examples: Sequence[Example], *,
             n_shots: int = 0, shots_from: Sequence[Example] = (), seed: int = 0,
             config: FitConfig | None = None, offsets: Mapping[str, Sequence[float] | None] | None = None
             ) -> EvalResult:
    """Greedy forward pass on `examples` and its accuracy, per-class accuracy and confusion (0-shot when the prompts
    are the initial ones; n-shot with class-balanced demonstrations drawn from `shots_from`). `offsets` replaces the
    calibration offsets of the layers it names (the graph's own are used otherwise)."""
    config = config or graph.fit
    examples = resolve_targets(graph, examples)
    prefix = None
    if n_shots > 0:
        if not shots_from:
            raise DlcUsageError("n_shots > 0 needs training examples to draw demonstrations from", code="E117",
                                hint="pass the train split as shots_from")
        pool = resolve_targets(graph, shots_from)
        root = Rng(seed)
        prefix = []
        for i, e in enumerate(examples):
            r = root.derive("shots", e.id or i)
            cand = [s for s in pool if not (s.id and s.id == e.id)]
            order = _balanced_order(r, cand, n_shots)
            prefix.append(shots_prefix(graph, [cand[j] for j in order]))
    opts = score_opts(config)
    if offsets:
        opts = opts.with_offsets(offsets)
    trace = forward(graph, prompts, lms, examples, temperature=0.0, rng=Rng(seed), seed_path=("eval",),
                    strip_hidden_options=config.strip_options_for_hidden, opts=opts,
                    input_prefix=prefix)
    targets = [e.target for e in examples]
    per_class: dict[str, float] = {}
    confusion: dict[str, dict[str, int]] = {}
    loglik = raws = None
    out = graph.layers[graph.output].output
    if out.kind == "choice":
        per_class, confusion = _class_counts(targets, trace.predictions, trace.correct)
        node = trace.nodes[graph.output]
        names = list(out.label_names)
        if node.generated is None:      # answered by generation (no prompt log-probs): no distribution
            loglik = [d[names.index(t)] for d, t in zip(node.label_logdist, targets)]  # type: ignore[index]
            raws = [list(r) for r in node.raw_logdist]  # type: ignore[arg-type]
    acc = sum(trace.correct) / len(examples) if examples else 0.0
    return EvalResult(accuracy=acc, predictions=list(trace.predictions), targets=targets, correct=list(trace.correct),
                      ids=[e.id for e in examples], per_class=per_class, confusion=confusion, loglik=loglik,
                      raw_logdists=raws)


def _class_counts(targets: Sequence[str], predictions: Sequence[str], correct: Sequence[bool]
                  ) -> tuple[dict[str, float], dict[str, dict[str, int]]]:
    """Per-class accuracy and the confusion counts {target: {prediction: n}} of a choice output."""
    tot = Counter(targets)
    ok = Counter(t for t, c in zip(targets, correct) if c)
    confusion: dict[str, dict[str, int]] = {}
    for t, p in zip(targets, predictions):
        confusion.setdefault(t, {}).setdefault(p, 0)
        confusion[t][p] += 1
    return {t: ok[t] / tot[t] for t in sorted(tot)}, confusion


def recalibrate(graph: Graph, res: EvalResult, offsets: Sequence[float]) -> EvalResult:
    """The same evaluation with the output layer's offsets replaced by `offsets`, computed from its raw label
    distributions without an LLM call (the output's offsets change only its own argmax and log p(target))."""
    if res.raw_logdists is None:
        raise ValueError("recalibrate needs a choice output's raw label distributions")
    out = graph.layers[graph.output].output
    names = list(out.label_names)
    dists = [apply_offsets(r, offsets) for r in res.raw_logdists]
    preds = [names[argmax(d)] for d in dists]
    correct = [is_correct(graph.metric, p, t) for p, t in zip(preds, res.targets)]
    per_class, confusion = _class_counts(res.targets, preds, correct)
    return EvalResult(accuracy=sum(correct) / len(correct) if correct else 0.0, predictions=preds,
                      targets=list(res.targets), correct=correct, ids=list(res.ids),
                      per_class=per_class, confusion=confusion,
                      loglik=[d[names.index(t)] for d, t in zip(dists, res.targets)], raw_logdists=res.raw_logdists)

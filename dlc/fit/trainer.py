"""The outer training loop (dln-reference §1.3 step 6, paper Alg. 1-3), its resumable state, evaluation and cost plan.

Iteration t = 0..iters: validate on dev when t % val_freq == 0 (t = 0 only with do_first_eval) and at t = iters;
keep the best prompts by dev accuracy (strictly better), push them into a memory of the M best prompt sets, and
backtrack to the best prompts after `tolerance` non-improving validations. Then (t < iters) train on a batch: forward,
hidden inference (`dlc.engine.hidden`), and one prompt update per trained layer (`dlc.engine.prompts`), all from the same samples.
The last iteration only validates; the final prompts are the best ones. Every random choice comes from
Rng(seed).derive("iter", t, ...), so a Trainer resumed from `TrainState.to_json()` repeats an uninterrupted run.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

from dlc.engine.hidden import infer_hidden, score_opts
from dlc.engine.forward import forward, render_forward, resolve_targets
from dlc.errors import DlcDataError, DlcFitError, DlcUsageError, did_you_mean
from dlc.ir import Example, FitConfig, Graph
from dlc.lm.base import LM
from dlc.engine.labels import verbalizers
from dlc.engine.prompts import update_layer
from dlc.rng import Rng
from dlc.engine.vi import decayed_penalty


@dataclass
class TrainState:
    """Everything needed to resume: exact JSON round trip via to_json() / from_json()."""

    iteration: int
    prompts: dict[str, str]
    best_prompts: dict[str, str]
    best_dev: float | None = None
    patience: int = 0
    memory: list[dict] = field(default_factory=list)     # [{"prompts": {...}, "dev": acc}], best first
    history: list[dict] = field(default_factory=list)    # compact per-iteration summaries
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TrainState":
        known = {f.name for f in fields(cls)}
        missing = {"iteration", "prompts", "best_prompts"} - set(d)
        if missing:
            from dlc.errors import DlcArtifactError
            raise DlcArtifactError(f"training state lacks {', '.join(sorted(missing))}", code="E510",
                                   hint="the run directory's state file is incomplete; start a new run")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def initial(cls, graph: Graph) -> "TrainState":
        return cls(iteration=0, prompts=graph.prompts(), best_prompts=graph.prompts())


# ---------------------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalResult:
    accuracy: float
    predictions: list[str]
    targets: list[str]
    correct: list[bool]
    ids: list[str]
    per_class: dict[str, float]
    confusion: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
        raise DlcUsageError("n_shots needs an output layer that reads only graph inputs (a DLN-1)", code="E120",
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
             config: FitConfig | None = None) -> EvalResult:
    """Greedy forward pass on `examples` and its accuracy, per-class accuracy and confusion (0-shot when the prompts
    are the initial ones; n-shot with class-balanced demonstrations drawn from `shots_from`)."""
    config = config or graph.fit
    examples = resolve_targets(graph, examples)
    prefix = None
    if n_shots > 0:
        if not shots_from:
            raise DlcUsageError("n_shots > 0 needs training examples to draw demonstrations from", code="E121",
                                hint="pass the train split as shots_from")
        pool = resolve_targets(graph, shots_from)
        root = Rng(seed)
        prefix = []
        for i, e in enumerate(examples):
            r = root.derive("shots", e.id or i)
            cand = [s for s in pool if not (s.id and s.id == e.id)]
            order = _balanced_order(r, cand, n_shots)
            prefix.append(shots_prefix(graph, [cand[j] for j in order]))
    trace = forward(graph, prompts, lms, examples, temperature=0.0, rng=Rng(seed), seed_path=("eval",),
                    strip_hidden_options=config.strip_options_for_hidden, opts=score_opts(config),
                    input_prefix=prefix)
    targets = [e.target for e in examples]
    per_class: dict[str, float] = {}
    confusion: dict[str, dict[str, int]] = {}
    if graph.layers[graph.output].output.kind == "choice":
        tot = Counter(targets)
        ok = Counter(t for t, c in zip(targets, trace.correct) if c)
        per_class = {t: ok[t] / tot[t] for t in sorted(tot)}
        for t, p in zip(targets, trace.predictions):
            confusion.setdefault(t, {}).setdefault(p, 0)
            confusion[t][p] += 1
    acc = sum(trace.correct) / len(examples) if examples else 0.0
    return EvalResult(accuracy=acc, predictions=list(trace.predictions), targets=targets, correct=list(trace.correct),
                      ids=[e.id for e in examples], per_class=per_class, confusion=confusion)


# ---------------------------------------------------------------------------------------------------- checks
def check_config(graph: Graph, config: FitConfig) -> tuple[str, ...]:
    """Reject impossible settings up front (E7xx with a fix); returns the layers to train, in topological order."""
    def bad(msg: str, hint: str, code: str = "E710") -> DlcFitError:
        return DlcFitError(msg, code=code, hint=hint)
    if config.iters < 0:
        raise bad(f"iters must be >= 0, got {config.iters}", "set iters = 0 for evaluation only")
    if config.batch_size < 1:
        raise bad(f"batch_size must be >= 1, got {config.batch_size}", "use e.g. batch_size = 20")
    if config.num_p_samples < 1 or config.num_h_samples < 1:
        raise bad("num_p_samples and num_h_samples must be >= 1", "use the paper's N = 20, K = 5")
    if config.val_freq < 1:
        raise bad(f"val_freq must be >= 1, got {config.val_freq}", "validate every 2 iterations: val_freq = 2")
    if config.posterior_temp <= 0:
        raise bad("posterior_temp must be > 0", "1.0 is the paper's setting; >= 100 means uniform weights")
    if config.bwd_temp < 0 or config.fwd_temp < 0:
        raise bad("temperatures must be >= 0", "fwd_temp = 0 (greedy), bwd_temp = 0.7")
    if config.num_p1_steps < 1:
        raise bad("num_p1_steps must be >= 1", "use num_p1_steps = 1")
    for name, val, ok in (("output_scoring", config.output_scoring, ("logprobs", "accuracy")),
                          ("hidden_scoring", config.hidden_scoring, ("logprobs", "accuracy")),
                          ("hidden_logp", config.hidden_logp, ("mean", "sum")),
                          ("output_logp", config.output_logp, ("mean", "sum")),
                          ("label_agg", getattr(config, "label_agg", "logsumexp"), ("logsumexp", "max"))):
        if val not in ok:
            raise bad(f"{name} = '{val}' is not one of {', '.join(ok)}", f"set {name} = {ok[0]}")
    if config.train:
        for n in config.train:
            if n not in graph.layers:
                raise bad(f"train names unknown layer '{n}'", did_you_mean(n, graph.layers) or
                          f"layers: {', '.join(graph.order)}", code="E711")
        names = tuple(n for n in graph.order if n in config.train)
    else:
        names = tuple(n for n in graph.order if graph.layers[n].trainable)
    return names


# ---------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One object per run; `step()` advances one iteration and returns its JSON-able record."""

    def __init__(self, graph: Graph, lms: Mapping[str, LM], train: Sequence[Example], dev: Sequence[Example],
                 config: FitConfig | None = None, state: TrainState | None = None) -> None:
        self.graph = graph
        self.lms = dict(lms)
        self.config = config or graph.fit
        self.train_layers = check_config(graph, self.config)
        self.train = resolve_targets(graph, train)
        self.dev = resolve_targets(graph, dev)
        if self.config.max_dev >= 0:
            self.dev = self.dev[:self.config.max_dev]
        if not self.train and self.config.iters > 0:
            raise DlcDataError("the training split is empty", code="E802", hint="check train_size and the data path")
        self.state = state or TrainState.initial(graph)
        missing = set(graph.order) - set(self.state.prompts)
        if missing:
            from dlc.errors import DlcArtifactError
            raise DlcArtifactError(f"the saved state has no prompt for {', '.join(sorted(missing))}", code="E511",
                                   hint="the graph changed since the run started; start a new run")
        self.rng = Rng(self.config.seed)
        self._dev_cache: dict[str, float] = {}
        self._usage0 = self._tokens_now()

    # -- helpers
    def _tokens_now(self) -> int:
        seen, total = set(), 0
        for lm in self.lms.values():
            if id(lm) in seen:
                continue
            seen.add(id(lm))
            total += lm.usage.prompt_tokens + lm.usage.completion_tokens
        return total

    def finished(self) -> bool:
        return self.state.done

    def dev_accuracy(self, prompts: Mapping[str, str]) -> float:
        key = json.dumps(prompts, sort_keys=True)
        if key not in self._dev_cache:
            # an n-shot baseline validates with the same demonstrations a test run would use
            self._dev_cache[key] = evaluate(self.graph, prompts, self.lms, self.dev, config=self.config,
                                            n_shots=self.config.n_shots, shots_from=self.train,
                                            seed=self.config.seed).accuracy if self.dev else 0.0
        return self._dev_cache[key]

    def sample_batch(self, iteration: int) -> list[Example]:
        r = self.rng.derive("iter", iteration, "batch")
        n = min(self.config.batch_size, len(self.train))
        if self.config.balance_batch:
            idx = _balanced_order(r, self.train, n)
        else:
            idx = r.sample(range(len(self.train)), n)
        return [self.train[i] for i in idx]

    def _remember(self, prompts: dict[str, str], acc: float) -> None:
        m = self.config.use_memory
        if m <= 0:
            return
        mem = [e for e in self.state.memory if e["prompts"] != prompts]
        mem.append({"prompts": dict(prompts), "dev": acc})
        mem.sort(key=lambda e: -e["dev"])   # stable: earlier sets win ties
        self.state.memory = mem[:m]

    def _validate(self, record: dict[str, Any]) -> None:
        st = self.state
        acc = self.dev_accuracy(st.prompts)
        record["dev"] = acc
        if st.best_dev is None or acc > st.best_dev:
            # the first evaluation sets the bar; calling it an improvement would overstate what training did
            record["baseline" if st.best_dev is None else "improved"] = True
            st.best_dev = acc
            st.best_prompts = dict(st.prompts)
            st.patience = 0
            self._remember(st.prompts, acc)
        else:
            st.patience += 1
            record["improved"] = False
            if self.config.tolerance >= 0 and st.patience >= self.config.tolerance:
                st.prompts = dict(st.best_prompts)
                st.patience = 0
                record["backtracked"] = True

    # -- one iteration
    def step(self) -> dict[str, Any]:
        st, cfg = self.state, self.config
        if st.done:
            raise DlcFitError("training is already finished", code="E720", hint="start a new run to train again")
        t = st.iteration
        record: dict[str, Any] = {"iteration": t, "dev": None}
        if (t % cfg.val_freq == 0 or t >= cfg.iters) and (t > 0 or cfg.do_first_eval):
            self._validate(record)
        if t >= cfg.iters:
            st.done = True
            st.prompts = dict(st.best_prompts)
        else:
            self._train_step(t, record)
            st.iteration = t + 1
        spent = (st.history[-1]["tokens"] if st.history else 0) + self._tokens_now() - self._usage0
        self._usage0 = self._tokens_now()
        record["tokens"] = spent
        if cfg.budget_tokens > 0 and spent >= cfg.budget_tokens and not st.done:
            record["stopped"] = f"token budget {cfg.budget_tokens} reached"
            st.done = True
            if st.best_dev is not None:
                st.prompts = dict(st.best_prompts)
        record["prompts"] = dict(st.prompts)
        record["best_dev"] = st.best_dev
        st.history.append({k: record[k] for k in ("iteration", "dev", "best_dev", "tokens", "prompts")
                           if k in record} | {k: record[k] for k in ("elbo", "train_acc", "skipped", "backtracked",
                                                                     "stopped") if k in record})
        return record

    def _train_step(self, t: int, record: dict[str, Any]) -> None:
        st, cfg, graph = self.state, self.config, self.graph
        batch = self.sample_batch(t)
        prompts = dict(st.prompts)
        trace = forward(graph, prompts, self.lms, batch, temperature=cfg.fwd_temp, rng=self.rng,
                        seed_path=("iter", t), strip_hidden_options=cfg.strip_options_for_hidden,
                        opts=score_opts(cfg))
        record["batch"] = [e.id for e in batch]
        record["forward"] = trace.to_json()
        record["train_acc"] = sum(trace.correct) / len(batch)
        if all(trace.correct):
            record["skipped"] = "no errors in the batch"   # the reference makes no update either
            record["elbo"] = None
            return
        posteriors = infer_hidden(graph, prompts, self.lms, trace, cfg, self.rng, t)
        record["hidden"] = {n: p.to_json() for n, p in posteriors.items()}
        lam = decayed_penalty(cfg.logp_penalty, t, cfg.iters, cfg.decay_logp_penalty)
        updates, new_prompts, elbo = {}, dict(prompts), 0.0
        for node in reversed(graph.order):
            if node not in self.train_layers:
                continue
            if node != graph.output and node not in posteriors:
                continue   # a hidden layer nothing reads has no target
            mem = [m["prompts"][node] for m in st.memory if node in m["prompts"]]
            steps = cfg.num_p1_steps if node != graph.output else 1
            cur = dict(prompts)
            layer_records = []
            for s in range(steps):
                upd = update_layer(graph, node, cur, mem, self.lms, trace, posteriors, cfg, self.rng, t,
                                   lam if node != graph.output else 0.0, step=s)
                layer_records.append(upd.to_json())
                cur[node] = upd.chosen
            new_prompts[node] = cur[node]
            elbo += layer_records[-1]["elbo"][layer_records[-1]["chosen_index"]]
            updates[node] = layer_records if steps > 1 else layer_records[0]
        record["layers"] = updates
        record["elbo"] = elbo
        record["logp_penalty"] = lam
        st.prompts = new_prompts

    def run(self) -> list[dict[str, Any]]:
        out = []
        while not self.finished():
            out.append(self.step())
        return out


# ---------------------------------------------------------------------------------------------------- cost plan
def plan(graph: Graph, config: FitConfig, n_train: int, n_dev: int) -> dict[str, Any]:
    """LLM requests per training iteration by kind (upper bounds: duplicate requests are sent once and a batch
    without errors skips the backward pass), validations and their cost, and a completion-token bound."""
    B = min(config.batch_size, n_train)
    K = config.num_h_samples
    N = config.num_p_samples
    M = config.use_memory
    names = check_config(graph, config)

    def n_score(layer_name: str) -> int:
        lay = graph.layers[layer_name]
        return sum(len(verbalizers(lab)) for lab in lay.output.labels) if lay.output.kind == "choice" else 1

    kinds: Counter[str] = Counter()
    gen_tokens = 0
    for n in graph.order:
        lay = graph.layers[n]
        if lay.output.kind == "choice":
            kinds["forward_score"] += B * n_score(n)
        else:
            kinds["forward_generate"] += B
            gen_tokens += B * lay.generation.max_tokens
    hidden = [n for n in graph.hidden_layers() if graph.children(n)]
    for n in hidden:
        lay = graph.layers[n]
        kinds["posterior_generate"] += B * K
        gen_tokens += B * K * lay.backward.max_tokens
        for c in graph.children(n):
            kinds["posterior_weight_score"] += B * K * n_score(c) * (2 if config.mi_regularization else 1)
        if config.include_prior:
            kinds["posterior_prior_score"] += B * K * n_score(n)
        if config.correct_weighting:
            kinds["posterior_q_score"] += B * K
    kept = 1 if config.use_h_argmax else K
    for n in names:
        lay = graph.layers[n]
        steps = config.num_p1_steps if n != graph.output else 1
        kinds["propose_generate"] += (N - 1) * steps
        gen_tokens += (N - 1) * steps * lay.backward.max_tokens
        cands = N + M
        hp = [p for p in lay.parents if p in hidden]
        ins = kept * len(hp) if hp else 1
        outs = 1 if n == graph.output else kept
        kinds["candidate_score"] += steps * cands * B * ins * outs * n_score(n)
        if n != graph.output and config.logp_penalty > 0:
            kinds["penalty_score"] += steps * cands * B * n_score(n)
        if n == graph.output and config.trust_factor > 0 and lay.output.kind == "choice":
            kinds["trust_score"] += cands * B * n_score(n)
    per_val: Counter[str] = Counter()
    n_dev_used = n_dev if config.max_dev < 0 else min(n_dev, config.max_dev)
    for n in graph.order:
        if graph.layers[n].output.kind == "choice":
            per_val["forward_score"] += n_dev_used * n_score(n)
        else:
            per_val["forward_generate"] += n_dev_used
    vals = sum(1 for t in range(config.iters + 1)
               if (t % config.val_freq == 0 or t == config.iters) and (t > 0 or config.do_first_eval))
    per_iter = dict(sorted(kinds.items()))
    return {"batch_size": B, "iterations": config.iters, "per_iteration": per_iter,
            "per_iteration_total": sum(per_iter.values()), "per_validation": dict(per_val), "validations": vals,
            "total_requests": sum(per_iter.values()) * config.iters + sum(per_val.values()) * vals,
            "max_completion_tokens_per_iteration": gen_tokens, "trained_layers": list(names)}

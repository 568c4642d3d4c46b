"""The outer training loop (dln-reference §1.3 step 6, paper Alg. 1-3) and its resumable state.

Iteration t = 0..iters: validate on dev when t % val_freq == 0 (t = 0 only with do_first_eval) and at t = iters;
keep the best parameter set (prompts + calibration offsets) by the selection rule of `dlc.train.selection`, push it
into a memory of the M best prompt sets, and backtrack to the best set after `tolerance` non-improving validations.
Then (t < iters) train on a batch: forward, hidden inference (`dlc.engine.hidden`), and one prompt update per trained
layer (`dlc.engine.prompts`), all from the same samples. The last iteration only validates; the final parameters are
the best ones. Every random choice comes from Rng(seed).derive("iter", t, ...), so a Trainer resumed from
`TrainState.to_json()` repeats an uninterrupted run.

Calibrated output layer (`calibration = fit`, engine/calibration.py): at every validation its offsets are refitted
(MAP) on the label distributions of `calibration_size` training examples (drawn with the seed) under the current
prompts, and kept only if they raise dev accuracy over the uncalibrated layer (`calibration_keep = accuracy`; the
offsets are fitted out of sample and there are two options, so the strictly-better rule is enough) or win by the
prompts' selection rule (`calibration_keep = selection`) — so calibration cannot cost dev accuracy.
During a training step each candidate prompt is scored with its own offsets fitted on the batch (prompts.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

from dlc.engine.calibration import calibrated, estimate_offsets
from dlc.engine.forward import forward, resolve_targets
from dlc.engine.hidden import infer_hidden, score_opts
from dlc.engine.prompts import update_layer
from dlc.engine.vi import decayed_penalty
from dlc.errors import DlcArtifactError, DlcDataError, DlcFitError
from dlc.train.config import check_config
from dlc.train.evaluation import EvalResult, _balanced_order, evaluate, recalibrate
from dlc.train.selection import compare
from dlc.ir import Example, FitConfig, Graph
from dlc.lm.base import LM
from dlc.rng import Rng


def calibration_set(train: Sequence[Example], config: FitConfig) -> list[Example]:
    """The training examples a calibrated output's offsets are fitted on: `calibration_size` of them drawn with
    the run seed (Rng(seed).derive("calibration")), in the order drawn; all of them when the size is -1 or larger."""
    n = config.calibration_size
    if n < 0 or n >= len(train):
        return list(train)
    idx = Rng(config.seed).derive("calibration").sample(range(len(train)), n)
    return [train[i] for i in idx]


@dataclass
class TrainState:
    """Everything needed to resume: exact JSON round trip via to_json() / from_json()."""

    iteration: int
    prompts: dict[str, str]
    best_prompts: dict[str, str]
    best_dev: float | None = None                         # dev accuracy of the best set
    patience: int = 0
    memory: list[dict] = field(default_factory=list)     # [{"prompts": {...}, "dev": score}], best first
    history: list[dict] = field(default_factory=list)    # compact per-iteration summaries
    done: bool = False
    offsets: dict[str, list[float]] = field(default_factory=dict)       # calibrated layers: current b ([]: none)
    best_offsets: dict[str, list[float]] = field(default_factory=dict)
    best_scores: list[float] | None = None               # per-dev-example validation scores of the best set
    dev_memo: dict[str, dict] = field(default_factory=dict)   # dev evaluations and calibration fits by parameter
                                                              # set: nothing is re-evaluated (or re-counted) after
                                                              # a resume or for a set validated again

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TrainState":
        known = {f.name for f in fields(cls)}
        missing = {"iteration", "prompts", "best_prompts"} - set(d)
        if missing:
            raise DlcArtifactError(f"training state lacks {', '.join(sorted(missing))}", code="E510",
                                   hint="the run directory's state file is incomplete; start a new run")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def initial(cls, graph: Graph) -> "TrainState":
        offs = {n: list(graph.layers[n].offset_vector() or []) for n in graph.order
                if calibrated(graph.layers[n])}
        return cls(iteration=0, prompts=graph.prompts(), best_prompts=graph.prompts(), offsets=offs,
                   best_offsets={k: list(v) for k, v in offs.items()})


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
            raise DlcDataError("the training split is empty", code="E812", hint="check train_size and the data path")
        self.state = state or TrainState.initial(graph)
        missing = set(graph.order) - set(self.state.prompts)
        if missing:
            from dlc.errors import DlcArtifactError
            raise DlcArtifactError(f"the saved state has no prompt for {', '.join(sorted(missing))}", code="E511",
                                   hint="the graph changed since the run started; start a new run")
        self.rng = Rng(self.config.seed)
        self.calibrated = tuple(n for n in graph.order if calibrated(graph.layers[n]))
        self.calibration_set = calibration_set(self.train, self.config) if self.calibrated else []
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

    def dev_eval(self, prompts: Mapping[str, str], offsets: Mapping[str, Sequence[float]]) -> EvalResult:
        """The dev evaluation of a parameter set (memoised: a backtracked set is not evaluated twice)."""
        key = json.dumps([prompts, offsets], sort_keys=True)
        memo = self.state.dev_memo
        if key not in memo:
            # an n-shot baseline validates with the same demonstrations a test run would use
            memo[key] = evaluate(self.graph, prompts, self.lms, self.dev, config=self.config,
                                 n_shots=self.config.n_shots, shots_from=self.train, seed=self.config.seed,
                                 offsets=offsets).to_state()
        return EvalResult.from_state(memo[key])

    def fit_output_offsets(self, prompts: Mapping[str, str]) -> list[float] | None:
        """Offsets of the calibrated output layer on the calibration set under `prompts`, estimated as its
        `calibration` says (MAP or batch, engine/calibration.py; None: nothing to fit on). Hidden layers keep
        their current offsets while the output's distributions are computed."""
        out = self.graph.output
        if out not in self.calibrated or not self.calibration_set:
            return None
        offsets = {**self.state.offsets, out: []}
        key = json.dumps(["calibration", prompts, offsets], sort_keys=True)
        memo = self.state.dev_memo      # a validation of an unchanged set must not re-run the calibration set
        if key not in memo:
            res = evaluate(self.graph, prompts, self.lms, self.calibration_set, config=self.config, offsets=offsets)
            names = list(self.graph.layers[out].output.label_names)
            # no label distributions (the output answers by generation on a backend without prompt log-probs):
            # nothing to calibrate
            memo[key] = {"offsets": None if res.raw_logdists is None else estimate_offsets(
                self.graph.layers[out].calibration, res.raw_logdists, [names.index(t) for t in res.targets],
                sigma=self.config.calibration_sigma)}
        b = memo[key]["offsets"]
        return None if b is None else list(b)

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
        st, cfg, out = self.state, self.config, self.graph.output
        if not self.dev:
            record["dev"] = 0.0
            scores: list[float] = []
            res = None
        else:
            if out in self.calibrated:
                # the output's offsets are refitted for the current prompts and must earn their place on dev
                raw = self.dev_eval(st.prompts, {**st.offsets, out: []})
                b = self.fit_output_offsets(st.prompts)
                res, st.offsets[out] = raw, []
                if b is not None:
                    cal = recalibrate(self.graph, raw, b)
                    if cfg.calibration_keep == "accuracy":    # two options, b fitted out of sample
                        cmp = compare(cal.scores("accuracy"), raw.scores("accuracy"), rule="best")
                    else:
                        cmp = compare(cal.scores(cfg.validation), raw.scores(cfg.validation), rule=cfg.accept,
                                      level=cfg.accept_level)
                    record["calibration"] = {"offsets": b, "dev_raw": raw.accuracy, "dev_calibrated": cal.accuracy,
                                             "kept": cmp.accepted, "comparison": cmp.to_json()}
                    if cmp.accepted:
                        res, st.offsets[out] = cal, list(b)
            else:
                res = self.dev_eval(st.prompts, st.offsets)
            scores = res.scores(cfg.validation)
            record["dev"] = res.accuracy
        record["dev_score"] = math.fsum(scores) / len(scores) if scores else 0.0
        if st.best_scores is None:
            improved = True
            record["baseline"] = True      # the first evaluation sets the bar; it is not an improvement
        else:
            cmp = compare(scores, st.best_scores, rule=cfg.accept, level=cfg.accept_level)
            record["comparison"] = cmp.to_json()
            improved = cmp.accepted
            record["improved"] = improved
        if improved:
            st.best_dev = record["dev"]
            st.best_scores = list(scores)
            st.best_prompts = dict(st.prompts)
            st.best_offsets = {k: list(v) for k, v in st.offsets.items()}
            st.patience = 0
            self._remember(st.prompts, record["dev_score"])
        else:
            st.patience += 1
            if cfg.tolerance >= 0 and st.patience >= cfg.tolerance:
                st.prompts = dict(st.best_prompts)
                st.offsets = {k: list(v) for k, v in st.best_offsets.items()}
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
            st.offsets = {k: list(v) for k, v in st.best_offsets.items()}
        else:
            self._train_step(t, record)
            st.iteration = t + 1
        spent = (st.history[-1]["tokens"] if st.history else 0) + self._tokens_now() - self._usage0
        self._usage0 = self._tokens_now()
        record["tokens"] = spent
        if cfg.budget_tokens > 0 and spent >= cfg.budget_tokens and not st.done:
            record["stopped"] = f"token budget {cfg.budget_tokens} reached"
            st.done = True
            if st.best_scores is not None:
                st.prompts = dict(st.best_prompts)
                st.offsets = {k: list(v) for k, v in st.best_offsets.items()}
        record["prompts"] = dict(st.prompts)
        if st.offsets:
            record["offsets"] = {k: list(v) for k, v in st.offsets.items()}
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
                        opts=score_opts(cfg, st.offsets))
        record["batch"] = [e.id for e in batch]
        record["forward"] = trace.to_json()
        record["train_acc"] = sum(trace.correct) / len(batch)
        if all(trace.correct):
            record["skipped"] = "no errors in the batch"   # the reference makes no update either
            record["elbo"] = None
            return
        posteriors = infer_hidden(graph, prompts, self.lms, trace, cfg, self.rng, t, offsets=st.offsets)
        record["hidden"] = {n: p.to_json() for n, p in posteriors.items()}
        lam = decayed_penalty(cfg.logp_penalty, t, cfg.iters, cfg.decay_logp_penalty)
        updates, new_prompts, new_offsets, elbo = {}, dict(prompts), dict(st.offsets), 0.0
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
                                   lam if node != graph.output else 0.0, step=s, offsets=st.offsets)
                layer_records.append(upd.to_json())
                cur[node] = upd.chosen
                if upd.chosen_offsets is not None:
                    new_offsets[node] = list(upd.chosen_offsets)
            new_prompts[node] = cur[node]
            elbo += layer_records[-1]["elbo"][layer_records[-1]["chosen_index"]]
            updates[node] = layer_records if steps > 1 else layer_records[0]
        record["layers"] = updates
        record["elbo"] = elbo
        record["logp_penalty"] = lam
        st.prompts = new_prompts
        st.offsets = new_offsets

    def run(self) -> list[dict[str, Any]]:
        out = []
        while not self.finished():
            out.append(self.step())
        return out


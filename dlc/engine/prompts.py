"""Prompt updates (paper Eq. 3, §4): propose, deduplicate, score, select — one layer at a time, all from the same
posterior samples and weights.

Score of candidate π_n for layer L (Alg. 3 generalised to DAGs):
    ELBO_n = (1/B) Σ_i Σ_(in,w_in) Σ_(out,w_out) w_in·w_out · log p(out | F_L(in, π_n))
where the output configurations are y (output layer) or L's own posterior samples, and the input configurations
are the posterior samples of L's hidden parents: parent p's sample h_pk has weight w_pk / m (m = the number of
L's hidden parents with a posterior), with L's other parents at the values p's samples were weighted with
(`Posterior.context`: h* of the layers visited before p, ĥ of the others; see engine/hidden.py), so a candidate is
scored on exactly the configurations the posterior weighed. Plain inputs are the graph's.

With one hidden parent this is the paper's expectation (DLN-1; DLN-2: π1 on samples h_ik with target y, π0 on x
with targets h_ik; Alg. 3's Σ_k Σ_k' q_l^k q_{l+1}^{k'}). With m ≥ 2 hidden parents it is an approximation: the
mean over parents of one-parent expectations, (1/m) Σ_p E_{q_p}[log p(out | h_p, the others fixed)], not the joint
E_{q_1…q_m}[log p(out | h_1, …, h_m)] of the paper's eq. 2 under a factorised posterior (Σ_p K_p configurations per
example instead of Π_p K_p). Each term holds the other parents at single values (h* or ĥ, as above) rather than
averaging over their samples, and the first-visited parent's term holds the later ones at ĥ, not at their h*: so
even with use_h_argmax it is ½·log p(out | ĥ_1, h*_2) + ½·log p(out | h*_1, h*_2) for two parents visited 2 then 1,
not log p(out | h*_1, h*_2).

Reward_n = ELBO_n − λ_T·KL_n (output layer trust region) − λ_t·penalty_n (hidden layers' exploration reward); the
argmax wins and ties go to the current prompt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dlc.lang import templates
from dlc.engine.hidden import Posterior, score_opts
from dlc.engine.forward import (Trace, as_backward_prompt, choice_requests, forward, generate_batch, label_of_text,
                                layer_context, layer_variables, lm_for, is_empty_text, output_correct, score_batch,
                                scores_labels, target_logp_from, target_logp_requests)
from dlc.errors import DlcError, DlcLMError
from dlc.ir import FitConfig, Graph
from dlc.lm.base import LM, GenerateRequest, ScoreRequest
from dlc.engine.budget import generate_fitting
from dlc.engine.calibration import apply_offsets, calibrated, estimate_offsets
from dlc.engine.proposals import clean_proposal, rejection_reason
from dlc.engine.labels import label_logdist_from, label_requests
from dlc.rng import Rng
from dlc.engine.vi import (argmax, categorical_kl, elbo_score, exploration_penalty, nce_scores,
                           trust_region_kl)


@dataclass
class LayerUpdate:
    """One layer's prompt step: the candidates, their scores and the choice (JSON-able for history.jsonl)."""

    node: str
    current: str
    candidates: list[str]
    elbo: list[float]
    reward: list[float]
    chosen: str
    chosen_index: int
    kl: list[float] | None = None
    penalty: list[float] | None = None
    penalty_weight: float = 0.0
    proposals: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    offsets: list[list[float]] | None = None     # calibrated layer: each candidate's fitted offsets b_n
    scored_on: list[int] | None = None           # racing: how many batch examples each candidate was scored on
    example_rewards: list[list[float]] | None = None   # exhaustive: r_ni, each candidate's per-example reward terms

    @property
    def chosen_offsets(self) -> list[float] | None:
        return None if self.offsets is None else self.offsets[self.chosen_index]

    @property
    def rejected(self) -> dict[str, int]:
        """How many proposals were rejected, by reason."""
        out: dict[str, int] = {}
        for r in self.proposals:
            if r.get("rejected"):
                out[r["rejected"]] = out.get(r["rejected"], 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "step": self.step, "current": self.current, "candidates": self.candidates,
                "elbo": self.elbo, "kl": self.kl, "penalty": self.penalty, "penalty_weight": self.penalty_weight,
                "reward": self.reward, "chosen": self.chosen, "chosen_index": self.chosen_index,
                "proposals": self.proposals, "rejected": self.rejected, "offsets": self.offsets,
                "scored_on": self.scored_on, "example_rewards": self.example_rewards}


def dedupe(prompts: Sequence[str]) -> list[str]:
    """Candidates in first-seen order without repeats or empties (§6.2.3: nothing is scored twice)."""
    seen: set[str] = set()
    out = []
    for p in prompts:
        p = p.strip()
        if p and p not in seen:
            seen.add(p)
            out.append(p)
    return out


def layer_view(graph: Graph, node: str, trace: Trace, posteriors: Mapping[str, Posterior],
               strip: bool) -> list[dict[str, Any]]:
    """What the proposal template sees per example: the layer's inputs, its output ĥ, its target (y or h*), and
    whether the *final* output was right (the reference's success/error split)."""
    layer = graph.layers[node]
    rows = []
    for i, e in enumerate(trace.examples):
        v = layer_variables(graph, layer, "", trace.example_texts(i), strip_hidden_options=strip)
        target = e.target if node == graph.output else posteriors[node].best[i]
        rows.append({"input": "\n\n".join(v["inputs"]), "output": trace.texts[node][i], "target": target,
                     "correct": trace.correct[i]})
    return rows


def propose(graph: Graph, node: str, current: str, memory_prompts: Sequence[str], view: Sequence[dict[str, Any]],
            lms: Mapping[str, LM], config: FitConfig, rng: Rng, iteration: int, step: int = 0
            ) -> tuple[list[str], list[dict[str, Any]]]:
    """N−1 proposals from B_π: proposal j improves base prompt bases[j % |bases|] (current, then memory), with
    meta-instruction pool[j % |pool|], on its own random permutation of the batch (a random half when
    held_out_prompt_ranking). Returns the deduplicated candidate list [current, memory..., new...] and a record."""
    layer = graph.layers[node]
    bases = dedupe([current, *memory_prompts]) or [current]
    pool = templates.messages(layer.backward.prompt_template.text)
    reqs, records = [], []
    B = len(view)
    strip_keys = ("input", "output", "target")

    def request(j: int, base: str, message: str, perm: Sequence[int], seed: int) -> GenerateRequest:
        shown = [view[i] for i in perm]
        variables = {"prompt": base, "message": message,
                     "successes": [{k: ex[k] for k in strip_keys} for ex in shown if ex["correct"]],
                     "errors": [{k: ex[k] for k in strip_keys} for ex in shown if not ex["correct"]]}
        try:
            text = templates.render(layer.backward.prompt_template.text, variables)
        except DlcError as e:
            raise e.with_node(node)
        return GenerateRequest(prompt=as_backward_prompt(layer, text), max_tokens=max(1, layer.backward.max_tokens),
                               temperature=config.bwd_temp, stop=layer.backward.stop, n=1, seed=seed,
                               tag=f"{node}/propose")

    for j in range(max(0, config.num_p_samples - 1)):
        r = rng.derive("iter", iteration, "node", node, "propose", step, j)
        perm = r.sample(range(B), B)
        if config.held_out_prompt_ranking and B > 1:
            perm = perm[:max(1, B // 2)]
        seed = rng.seed_for("iter", iteration, "node", node, "propose", step, j)
        rec = {"base": bases[j % len(bases)], "message": pool[j % len(pool)] if pool else "", "shown": perm,
               "seed": seed}
        reqs.append(request(j, rec["base"], rec["message"], perm, seed))
        records.append(rec)

    def fewer(j: int, attempt: int) -> GenerateRequest | None:
        """Over the context: show the first half of the examples shown so far (recorded), down to one."""
        rec = records[j]
        if len(rec["shown"]) <= 1:
            return None
        rec.setdefault("shown_all", list(rec["shown"]))
        rec["shown"] = rec["shown"][:len(rec["shown"]) // 2]
        rec["context_budget"] = f"{len(rec['shown'])} of {len(rec['shown_all'])} examples shown (context)"
        return request(j, rec["base"], rec["message"], rec["shown"], rec["seed"])

    results, _steps = generate_fitting(lm_for(lms, layer.backward_model, node), reqs, node, fewer,
                                       "the proposal prompt with one example shown")
    new = []
    for rec, res in zip(records, results):
        raw = res.texts[0] if res.texts else ""
        rec["text"] = clean_proposal(raw, layer.backward.prompt_template.text)
        if rec["text"] != raw.strip():
            rec["raw"] = raw
        rec["rejected"] = rejection_reason(rec["text"], [view[i]["input"] for i in rec["shown"]],
                                           max_words=config.max_prompt_words, copy_ngram=config.copy_ngram)
        if rec["rejected"] is None:
            new.append(rec["text"])
    return dedupe([current, *bases, *new]), records


def _configs(graph: Graph, node: str, i: int, trace: Trace, posteriors: Mapping[str, Posterior]
             ) -> tuple[list[tuple[dict[str, str], float]], list[tuple[str, float]]]:
    """(input configurations with weights, output configurations with weights) of layer `node` for example i: each
    hidden parent's samples, the other parents at the values that parent's posterior was weighted with."""
    layer = graph.layers[node]
    base = trace.example_texts(i)
    hidden = [p for p in layer.parents if p in posteriors]
    ins: list[tuple[dict[str, str], float]]
    if not hidden:
        ins = [(base, 1.0)]
    else:
        ins = []
        for p in hidden:
            context = dict(base, **{q: t for q, t in posteriors[p].context_of(trace, i).items() if q in layer.parents})
            ins.extend((dict(context, **{p: h}), w / len(hidden))
                       for h, w in zip(posteriors[p].samples[i], posteriors[p].weights[i]))
    if node == graph.output:
        outs = [(trace.examples[i].target, 1.0)]
    else:
        outs = list(zip(posteriors[node].samples[i], posteriors[node].weights[i]))
    # an empty target text has no log-probability to score (forward.is_empty_text): it is left out, i.e. it adds
    # the same (nothing) to every candidate's ELBO, and the other configurations keep their weights
    return ins, [(t, w) for t, w in outs if not is_empty_text(layer, t)]


def score_candidates(graph: Graph, node: str, candidates: Sequence[str], prompts: Mapping[str, str],
                     lms: Mapping[str, LM], trace: Trace, posteriors: Mapping[str, Posterior], config: FitConfig,
                     penalty_weight: float, offsets: Mapping[str, Sequence[float]] | None = None,
                     examples: Sequence[int] | None = None, per_example: list[list[float]] | None = None
                     ) -> tuple[list[float], list[float] | None, list[float] | None, list[list[float]] | None]:
    """ELBO_n for every candidate (one batched score call), plus trust-region KL_n, exploration penalty_n and,
    for a calibrated layer, each candidate's fitted offsets b_n. `examples`: score on these batch examples only
    (candidate racing); every term is then a mean over them. `per_example`, when given, receives each candidate's
    per-example reward terms r_ni = S_ni − λ_T·KL_ni − λ_t·penalty_ni (reward_n is their mean; bench replay)."""
    layer = graph.layers[node]
    opts = score_opts(config, offsets)
    strip = config.strip_options_for_hidden
    lm = lm_for(lms, layer.model, node)
    idx = list(range(len(trace.examples))) if examples is None else list(examples)
    B = len(idx)
    is_out = node == graph.output
    accuracy = config.output_scoring == "accuracy" if is_out else config.hidden_scoring == "accuracy"
    generative = layer.output.kind == "choice" and not scores_labels(lm)   # answers by generation (forward.py)
    if generative and (not accuracy or (is_out and config.trust_factor > 0)):
        raise DlcLMError(f"model '{layer.model}' gives no prompt log-probabilities, which scoring the prompts of "
                         f"choice layer '{node}' by log p(label) needs", code="E628", node=node,
                         hint=f"set fit.{'output' if is_out else 'hidden'}_scoring = accuracy"
                              f"{' and fit.trust_factor = 0' if is_out else ''}: the layer is then scored by its "
                              "generated answers")
    # judged by its greedy answers, never scored: an accuracy-scored generative (text/number) output, or a choice
    # layer on a backend without prompt log-probs (which then need not give any)
    by_answer = accuracy and (layer.output.kind != "choice" or generative)

    if accuracy and not is_out:
        # hidden layer scored by end-to-end accuracy: the whole graph run greedily with the candidate prompt
        elbo = []
        for cand in candidates:
            tr = forward(graph, dict(prompts, **{node: cand}), lms, [trace.examples[i] for i in idx],
                         temperature=0.0, strip_hidden_options=strip, opts=opts)
            elbo.append(sum(tr.correct) / max(1, B))
            if per_example is not None:
                per_example.append([1.0 if c else 0.0 for c in tr.correct])
        return elbo, None, None, None

    spans: list[tuple[int, int, float, int, int, int, str]] = []  # cand, example, w, in_idx, start, n, target
    reqs: list[ScoreRequest] = []
    tag = f"{node}/score"
    configs = {i: _configs(graph, node, i, trace, posteriors) for i in idx}
    for n_idx, cand in enumerate(candidates):
        for i in idx:
            ins, outs = configs[i]
            for a, (texts, w_in) in enumerate(ins):
                ctx = layer_context(graph, layer, cand, texts, strip_hidden_options=strip)
                for tgt, w_out in outs:
                    rr = [] if by_answer else target_logp_requests(graph, layer, ctx, tgt, tag)
                    spans.append((n_idx, i, w_in * w_out, a, len(reqs), len(rr), tgt))
                    reqs.extend(rr)
    pen_spans: list[tuple[int, int, int, int]] = []
    wrong = [not c for c in trace.correct]
    if not is_out and penalty_weight != 0.0 and any(wrong):
        for n_idx, cand in enumerate(candidates):
            for i in idx:
                if not wrong[i] or is_empty_text(layer, trace.texts[node][i]):   # empty ĥ: no log p, no term
                    continue
                ctx = layer_context(graph, layer, cand, trace.example_texts(i), strip_hidden_options=strip)
                rr = target_logp_requests(graph, layer, ctx, trace.texts[node][i], f"{node}/penalty")
                pen_spans.append((n_idx, i, len(reqs), len(rr)))
                reqs.extend(rr)
    kl_spans: list[tuple[int, int, int, int]] = []
    trust = is_out and config.trust_factor > 0 and layer.output.kind == "choice"
    if trust:
        for n_idx, cand in enumerate(candidates):
            for i in idx:
                ctx = layer_context(graph, layer, cand, trace.example_texts(i), strip_hidden_options=strip)
                rr = label_requests(ctx, layer.output.labels, f"{node}/trust")
                kl_spans.append((n_idx, i, len(reqs), len(rr)))
                reqs.extend(rr)
    res = score_batch(lm, reqs, node)

    gen_acc: dict[tuple[int, int, int], float] = {}
    if by_answer:
        g = layer.generation
        greqs, keys = [], []
        for n_idx, cand in enumerate(candidates):
            for i in idx:
                for a, (texts, _w) in enumerate(configs[i][0]):
                    ctx = layer_context(graph, layer, cand, texts, strip_hidden_options=strip)
                    greqs.extend(choice_requests(layer, [ctx], f"{node}/score") if generative else
                                 [GenerateRequest(prompt=ctx, max_tokens=max(1, g.max_tokens), temperature=0.0,
                                                  stop=g.stop, tag=f"{node}/score")])
                    keys.append((n_idx, i, a))
        for key, gr in zip(keys, generate_batch(lm, greqs, node)):
            out = gr.texts[0].strip() if gr.texts else ""
            if generative:
                out = label_of_text(layer, out)
            gen_acc[key] = 1.0 if output_correct(graph, out, trace.examples[key[1]].target) else 0.0

    # a calibrated choice layer scores each candidate with its own offsets, fitted (MAP or batch) on this batch's
    # label distributions under that candidate: prompt search and calibration optimise one objective instead of
    # fighting
    cand_offsets: list[list[float]] | None = None
    if calibrated(layer) and not generative:
        names = list(layer.output.label_names)
        raws: list[list[list[float]]] = [[] for _ in candidates]
        tix: list[list[int]] = [[] for _ in candidates]
        wts: list[list[float]] = [[] for _ in candidates]
        for n_idx, i, w, a, start, n, tgt in spans:
            raw = target_logp_from(graph, layer, res[start:start + n], tgt, opts, offsets=False)[1]
            if raw is not None and tgt in names:
                raws[n_idx].append(raw)
                tix[n_idx].append(names.index(tgt))
                wts[n_idx].append(w)
        cand_offsets = [estimate_offsets(layer.calibration, raws[n], tix[n], sigma=config.calibration_sigma,
                                         weights=wts[n]) for n in range(len(candidates))]

    # S[n][i] -> list of (weight, score, in_idx)
    table: dict[int, dict[int, list[tuple[float, float, int]]]] = {n: {i: [] for i in idx}
                                                                    for n in range(len(candidates))}
    for n_idx, i, w, a, start, n, tgt in spans:
        if by_answer:
            table[n_idx][i].append((w, gen_acc[(n_idx, i, a)], a))
            continue
        lp, dist = target_logp_from(graph, layer, res[start:start + n], tgt, opts,
                                    offsets=cand_offsets[n_idx] if cand_offsets is not None else True)
        if accuracy:
            lp = (1.0 if layer.output.label_names[argmax(dist)] == tgt else 0.0) if dist is not None \
                else gen_acc[(n_idx, i, a)]
        table[n_idx][i].append((w, lp, a))
    elbo = []
    ex_terms: list[list[float]] = []       # S_ni: example i's share of ELBO_n (elbo_n is their mean)
    for n_idx in range(len(candidates)):
        ws, ss = [], []
        for i in idx:
            row = table[n_idx][i]
            scores = [s for _w, s, _a in row]
            if config.use_nce and not is_out and not accuracy:
                # log-softmax over the samples of each input configuration
                scores = []
                for a in sorted({a for _w, _s, a in row}):
                    scores.extend(nce_scores([s for _w, s, aa in row if aa == a]))
                row = sorted(row, key=lambda t: t[2])
            ws.append([w for w, _s, _a in row])
            ss.append(scores)
        elbo.append(elbo_score(ws, ss))
        ex_terms.append([math.fsum(w * v for w, v in zip(wr, sr) if w != 0.0) for wr, sr in zip(ws, ss)])

    penalty = None
    if pen_spans or (not is_out and penalty_weight != 0.0):
        pos = {i: k for k, i in enumerate(idx)}
        vals = [[0.0] * B for _ in candidates]
        for n_idx, i, start, n in pen_spans:
            vals[n_idx][pos[i]] = target_logp_from(graph, layer, res[start:start + n], trace.texts[node][i],
                                                   opts)[0]
        sub_wrong = [wrong[i] for i in idx]
        penalty = [exploration_penalty(vals[n], sub_wrong) for n in range(len(candidates))]
    kl = None
    if trust:
        pos = {i: k for k, i in enumerate(idx)}
        ref = [trace.nodes[node].label_logdist[i] for i in idx]
        cand_d = [[[] for _ in range(B)] for _ in candidates]  # type: list[list[list[float]]]
        for n_idx, i, start, n in kl_spans:
            cand_d[n_idx][pos[i]] = apply_offsets(
                label_logdist_from(res[start:start + n], layer.output.labels, agg=opts.label_agg,
                                   reduction=opts.output_logp),
                cand_offsets[n_idx] if cand_offsets is not None else opts.offsets_for(layer))
        kl = [trust_region_kl(ref, cand_d[n]) for n in range(len(candidates))]  # type: ignore[arg-type]
        if per_example is not None:
            for n in range(len(candidates)):
                ex_terms[n] = [v - config.trust_factor * categorical_kl(p, q)
                               for v, p, q in zip(ex_terms[n], ref, cand_d[n])]
    if per_example is not None:
        for n in range(len(candidates)):
            if penalty is not None:
                ex_terms[n] = [v - penalty_weight * (vals[n][k] if sub_wrong[k] else 0.0)
                               for k, v in enumerate(ex_terms[n])]
            per_example.append(ex_terms[n])
    return elbo, kl, penalty, cand_offsets


def update_layer(graph: Graph, node: str, prompts: Mapping[str, str], memory_prompts: Sequence[str],
                 lms: Mapping[str, LM], trace: Trace, posteriors: Mapping[str, Posterior], config: FitConfig,
                 rng: Rng, iteration: int, penalty_weight: float, step: int = 0,
                 offsets: Mapping[str, Sequence[float]] | None = None) -> LayerUpdate:
    """Propose, score and select one layer's prompt (the current prompt stays a candidate and wins ties)."""
    current = prompts[node]
    view = layer_view(graph, node, trace, posteriors, config.strip_options_for_hidden)
    candidates, records = propose(graph, node, current, memory_prompts, view, lms, config, rng, iteration, step)
    if current.strip() not in candidates:  # an empty current prompt is still the "no step" candidate
        candidates = [current, *candidates]
    else:
        candidates = [current if c == current.strip() else c for c in candidates]
    if config.racing == "halving" and len(candidates) > 2:
        return _race(graph, node, candidates, records, prompts, lms, trace, posteriors, config, penalty_weight,
                     offsets, step)
    rows: list[list[float]] = []
    elbo, kl, penalty, cand_offsets = score_candidates(graph, node, candidates, prompts, lms, trace, posteriors,
                                                       config, penalty_weight, offsets, per_example=rows)
    reward = _rewards(elbo, kl, penalty, config.trust_factor, penalty_weight)
    best = argmax(reward)
    return LayerUpdate(node=node, current=current, candidates=list(candidates), elbo=elbo, reward=reward,
                       chosen=candidates[best], chosen_index=best, kl=kl, penalty=penalty,
                       penalty_weight=penalty_weight if penalty is not None else 0.0, proposals=records, step=step,
                       offsets=cand_offsets, example_rewards=[[round(v, 6) for v in r] for r in rows] or None)


def _rewards(elbo: Sequence[float], kl: Sequence[float] | None, penalty: Sequence[float] | None,
             trust_factor: float, penalty_weight: float) -> list[float]:
    """Reward_n = ELBO_n − λ_T·KL_n − λ_t·penalty_n (a NaN reward loses)."""
    out = []
    for n, r in enumerate(elbo):
        if kl is not None:
            r -= trust_factor * kl[n]
        if penalty is not None:
            r -= penalty_weight * penalty[n]
        out.append(r if not math.isnan(r) else float("-inf"))
    return out


def race_schedule(n_candidates: int, batch: int) -> list[int]:
    """Successive halving's example counts: R = ⌈log2 N⌉ rounds on the first B/2^R, B/2^(R-1), … examples of the
    batch (at least 2), the last on all B. Every round keeps the better half; the incumbent is never dropped."""
    rounds = max(1, math.ceil(math.log2(max(2, n_candidates))))
    sizes = [max(2, math.ceil(batch / 2 ** (rounds - r))) for r in range(rounds)] + [batch]
    return sorted({min(batch, m) for m in sizes})


def _race(graph: Graph, node: str, candidates: list[str], records: list[dict[str, Any]], prompts: Mapping[str, str],
          lms: Mapping[str, LM], trace: Trace, posteriors: Mapping[str, Posterior], config: FitConfig,
          penalty_weight: float, offsets: Mapping[str, Sequence[float]] | None, step: int) -> LayerUpdate:
    """Candidate racing (issue 15, successive halving): score the live candidates on a growing prefix of the batch
    and keep the better half each round, until one challenger is left or the batch is used up; the incumbent
    (index 0, the current prompt) is always kept, so it is scored on the whole batch and the final comparison is
    on all B examples. A round re-asks the examples of the rounds before: an in-memory memo answers them, so a
    candidate costs the tokens of the examples it reached. Each round is a mean over its own examples (a
    calibrated candidate's offsets are refitted on them)."""
    B = len(trace.examples)
    memo = {name: _ScoreMemo(lm) for name, lm in lms.items()}   # a round re-asks earlier examples: answered here
    alive = list(range(len(candidates)))
    scored_on = [0] * len(candidates)
    elbo = [float("nan")] * len(candidates)
    reward = [float("-inf")] * len(candidates)
    kl_all: list[float] | None = None
    pen_all: list[float] | None = None
    off_all: list[list[float]] | None = None
    sched = race_schedule(len(candidates), B)
    k_round = 0
    while True:
        m = sched[k_round]
        cands = [candidates[n] for n in alive]
        e, kl, pen, offs = score_candidates(graph, node, cands, prompts, memo, trace, posteriors, config,
                                            penalty_weight, offsets, examples=range(m))
        r = _rewards(e, kl, pen, config.trust_factor, penalty_weight)
        for k, n in enumerate(alive):
            scored_on[n], elbo[n], reward[n] = m, e[k], r[k]
            if kl is not None:
                kl_all = kl_all or [float("nan")] * len(candidates)
                kl_all[n] = kl[k]
            if pen is not None:
                pen_all = pen_all or [float("nan")] * len(candidates)
                pen_all[n] = pen[k]
            if offs is not None:
                off_all = off_all or [[] for _ in candidates]
                off_all[n] = offs[k]
        if m >= B:
            break
        if len(alive) > 2:
            order = sorted(alive, key=lambda n: (-reward[n], n))
            alive = sorted(set(order[:math.ceil(len(alive) / 2)]) | {0})
        # the incumbent and one challenger left: straight to the whole batch
        k_round = k_round + 1 if len(alive) > 2 else len(sched) - 1
    best = max(alive, key=lambda n: (reward[n], -n))
    return LayerUpdate(node=node, current=candidates[0], candidates=list(candidates), elbo=elbo, reward=reward,
                       chosen=candidates[best], chosen_index=best, kl=kl_all, penalty=pen_all,
                       penalty_weight=penalty_weight if pen_all is not None else 0.0, proposals=records, step=step,
                       offsets=off_all, scored_on=scored_on)


class _ScoreMemo:
    """An LM whose `score` answers a request it has already answered from memory (racing's later rounds re-ask the
    earlier rounds' examples); everything else goes to the wrapped LM."""

    def __init__(self, lm: LM) -> None:
        self._lm = lm
        self._seen: dict[ScoreRequest, Any] = {}
        self.model_id = lm.model_id
        self.capabilities = lm.capabilities

    def score(self, requests: Sequence[ScoreRequest]) -> list[Any]:
        todo = list(dict.fromkeys(r for r in requests if r not in self._seen))
        if todo:
            self._seen.update(zip(todo, self._lm.score(todo)))
        return [self._seen[r] for r in requests]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Any]:
        return self._lm.generate(requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lm, name)

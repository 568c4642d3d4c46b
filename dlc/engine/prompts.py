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
from dlc.engine.forward import (Trace, as_backward_prompt, forward, generate_batch, layer_context, layer_variables, lm_for,
                        is_empty_text, output_correct, score_batch, target_logp_from, target_logp_requests)
from dlc.errors import DlcError
from dlc.ir import FitConfig, Graph, Layer
from dlc.lm.base import LM, GenerateRequest, ScoreRequest
from dlc.engine.calibration import apply_offsets, fit_offsets
from dlc.engine.proposals import clean_proposal, rejection_reason
from dlc.engine.labels import label_logdist_from, label_requests
from dlc.rng import Rng
from dlc.engine.vi import argmax, elbo_score, exploration_penalty, nce_scores, trust_region_kl


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
                "proposals": self.proposals, "rejected": self.rejected, "offsets": self.offsets}


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
    for j in range(max(0, config.num_p_samples - 1)):
        r = rng.derive("iter", iteration, "node", node, "propose", step, j)
        perm = r.sample(range(B), B)
        if config.held_out_prompt_ranking and B > 1:
            perm = perm[:max(1, B // 2)]
        shown = [view[i] for i in perm]
        strip_keys = ("input", "output", "target")
        variables = {"prompt": bases[j % len(bases)], "message": pool[j % len(pool)] if pool else "",
                     "successes": [{k: ex[k] for k in strip_keys} for ex in shown if ex["correct"]],
                     "errors": [{k: ex[k] for k in strip_keys} for ex in shown if not ex["correct"]]}
        try:
            text = templates.render(layer.backward.prompt_template.text, variables)
        except DlcError as e:
            raise e.with_node(node)
        seed = rng.seed_for("iter", iteration, "node", node, "propose", step, j)
        reqs.append(GenerateRequest(prompt=as_backward_prompt(layer, text), max_tokens=max(1, layer.backward.max_tokens),
                                    temperature=config.bwd_temp, stop=layer.backward.stop, n=1, seed=seed,
                                    tag=f"{node}/propose"))
        records.append({"base": variables["prompt"], "message": variables["message"], "shown": perm, "seed": seed})
    results = generate_batch(lm_for(lms, layer.backward_model, node), reqs, node)
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
                     penalty_weight: float, offsets: Mapping[str, Sequence[float]] | None = None
                     ) -> tuple[list[float], list[float] | None, list[float] | None, list[list[float]] | None]:
    """ELBO_n for every candidate (one batched score call), plus trust-region KL_n, exploration penalty_n and,
    for a calibrated layer, each candidate's fitted offsets b_n."""
    layer = graph.layers[node]
    opts = score_opts(config, offsets)
    strip = config.strip_options_for_hidden
    lm = lm_for(lms, layer.model, node)
    B = len(trace.examples)
    is_out = node == graph.output
    accuracy = config.output_scoring == "accuracy" if is_out else config.hidden_scoring == "accuracy"

    if accuracy and not is_out:
        # hidden layer scored by end-to-end accuracy: the whole graph run greedily with the candidate prompt
        elbo = []
        for cand in candidates:
            tr = forward(graph, dict(prompts, **{node: cand}), lms, trace.examples, temperature=0.0,
                         strip_hidden_options=strip, opts=opts)
            elbo.append(sum(tr.correct) / max(1, B))
        return elbo, None, None, None

    spans: list[tuple[int, int, float, int, int, int, str]] = []  # cand, example, w, in_idx, start, n, target
    reqs: list[ScoreRequest] = []
    tag = f"{node}/score"
    configs = [_configs(graph, node, i, trace, posteriors) for i in range(B)]
    for n_idx, cand in enumerate(candidates):
        for i in range(B):
            ins, outs = configs[i]
            for a, (texts, w_in) in enumerate(ins):
                ctx = layer_context(graph, layer, cand, texts, strip_hidden_options=strip)
                for tgt, w_out in outs:
                    rr = target_logp_requests(graph, layer, ctx, tgt, tag)
                    spans.append((n_idx, i, w_in * w_out, a, len(reqs), len(rr), tgt))
                    reqs.extend(rr)
    pen_spans: list[tuple[int, int, int, int]] = []
    wrong = [not c for c in trace.correct]
    if not is_out and penalty_weight != 0.0 and any(wrong):
        for n_idx, cand in enumerate(candidates):
            for i in range(B):
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
            for i in range(B):
                ctx = layer_context(graph, layer, cand, trace.example_texts(i), strip_hidden_options=strip)
                rr = label_requests(ctx, layer.output.labels, f"{node}/trust")
                kl_spans.append((n_idx, i, len(reqs), len(rr)))
                reqs.extend(rr)
    res = score_batch(lm, reqs, node)

    gen_acc: dict[tuple[int, int, int], float] = {}
    if accuracy and layer.output.kind != "choice":
        g = layer.generation
        greqs, keys = [], []
        for n_idx, cand in enumerate(candidates):
            for i in range(B):
                for a, (texts, _w) in enumerate(configs[i][0]):
                    greqs.append(GenerateRequest(prompt=layer_context(graph, layer, cand, texts,
                                                                      strip_hidden_options=strip),
                                                 max_tokens=max(1, g.max_tokens), temperature=0.0, stop=g.stop,
                                                 tag=f"{node}/score"))
                    keys.append((n_idx, i, a))
        for key, gr in zip(keys, generate_batch(lm, greqs, node)):
            out = gr.texts[0].strip() if gr.texts else ""
            gen_acc[key] = 1.0 if output_correct(graph, out, trace.examples[key[1]].target) else 0.0

    # a calibrated choice layer scores each candidate with its own offsets, fitted (MAP) on this batch's label
    # distributions under that candidate: prompt search and calibration optimise one objective instead of fighting
    cand_offsets: list[list[float]] | None = None
    if calibrated(layer):
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
        cand_offsets = [fit_offsets(raws[n], tix[n], sigma=config.calibration_sigma, weights=wts[n])
                        for n in range(len(candidates))]

    # S[n][i] -> list of (weight, score, in_idx)
    table: list[list[list[tuple[float, float, int]]]] = [[[] for _ in range(B)] for _ in candidates]
    for n_idx, i, w, a, start, n, tgt in spans:
        lp, dist = target_logp_from(graph, layer, res[start:start + n], tgt, opts,
                                    offsets=cand_offsets[n_idx] if cand_offsets is not None else True)
        if accuracy:
            lp = (1.0 if layer.output.label_names[argmax(dist)] == tgt else 0.0) if dist is not None \
                else gen_acc[(n_idx, i, a)]
        table[n_idx][i].append((w, lp, a))
    elbo = []
    for n_idx in range(len(candidates)):
        ws, ss = [], []
        for i in range(B):
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

    penalty = None
    if pen_spans or (not is_out and penalty_weight != 0.0):
        vals = [[0.0] * B for _ in candidates]
        for n_idx, i, start, n in pen_spans:
            vals[n_idx][i] = target_logp_from(graph, layer, res[start:start + n], trace.texts[node][i], opts)[0]
        penalty = [exploration_penalty(vals[n], wrong) for n in range(len(candidates))]
    kl = None
    if trust:
        ref = [d for d in trace.nodes[node].label_logdist]
        cand_d = [[[] for _ in range(B)] for _ in candidates]  # type: list[list[list[float]]]
        for n_idx, i, start, n in kl_spans:
            cand_d[n_idx][i] = apply_offsets(
                label_logdist_from(res[start:start + n], layer.output.labels, agg=opts.label_agg,
                                   reduction=opts.output_logp),
                cand_offsets[n_idx] if cand_offsets is not None else opts.offsets_for(layer))
        kl = [trust_region_kl(ref, cand_d[n]) for n in range(len(candidates))]  # type: ignore[arg-type]
    return elbo, kl, penalty, cand_offsets


def calibrated(layer: Layer) -> bool:
    """Does the layer learn calibration offsets (a choice layer with calibration = fit)?"""
    return layer.calibration == "fit" and layer.output.kind == "choice"


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
    elbo, kl, penalty, cand_offsets = score_candidates(graph, node, candidates, prompts, lms, trace, posteriors,
                                                       config, penalty_weight, offsets)
    reward = []
    for n in range(len(candidates)):
        r = elbo[n]
        if kl is not None:
            r -= config.trust_factor * kl[n]
        if penalty is not None:
            r -= penalty_weight * penalty[n]
        reward.append(r if not math.isnan(r) else float("-inf"))
    best = argmax(reward)
    return LayerUpdate(node=node, current=current, candidates=list(candidates), elbo=elbo, reward=reward,
                       chosen=candidates[best], chosen_index=best, kl=kl, penalty=penalty,
                       penalty_weight=penalty_weight if penalty is not None else 0.0, proposals=records, step=step,
                       offsets=cand_offsets)

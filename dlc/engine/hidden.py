"""Hidden-text inference over the DAG (paper §3 and App. E, Algorithm 3), in reverse topological order.

For every hidden layer n (children already visited, so their targets are known):
1. draw K proposals h_ik per example from the layer's posterior mixture q (prior, answer-conditioned prior, edit ...)
   rendered with the layer's forward view, its current output ĥ_i, and its children's targets and prompts;
2. weight them: logit_ik = Σ_children log p(target_c,i | h_ik, the child's other inputs, π_c)
   [+ log p(h_ik | parents, π_n)] [− log q(h_ik)] [− Σ_c log p(target_c,i | h_ik alone, π_c)], w = softmax(logit/T);
3. h*_i = argmax_k w_ik becomes the target of n for its own parents (the greedy chain of Alg. 3).
A node with several children sums their log-likelihoods. A child's other parents (n's siblings) take the best
values known when n is visited: h* for a layer already visited (one that follows n in topological order: a child
of n, as `a` in h -> a -> y with h -> y, or a later sibling, as `steps` when `brief` is visited in
graphs/branched.dln), the forward output ĥ for one still to come (an earlier sibling: `brief` when `steps` is
visited). `Posterior.context` records these values per example, and candidate scoring (prompts._configs) scores a
child's prompt with exactly them, so weights and scores agree; prompts.py documents what this makes of the ELBO of
a layer with several hidden parents. The output layer's target is the dataset label.

Empty texts (forward.is_empty_text) have no log-probability the LM can give: an empty sample h_ik gets logit −inf
(weight 0) whenever the logit has a term log p(h_ik | ·) (include_prior) or log q(h_ik) (correct_weighting), unless
every sample of the example is empty (uniform weights); a child whose target is empty for example i adds nothing
to that example's logits (a term that is the same for every k). Without those terms an empty h is an ordinary
input and is weighted by its children like any other sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dlc.lang import templates
from dlc.engine.forward import (ScoreOpts, Trace, as_backward_prompt, generate_batch, layer_context, layer_variables,
                        is_empty_text, lm_for, output_correct, render_forward, score_batch, target_logp_from,
                        target_logp_requests)
from dlc.engine.budget import clip_limit, clip_text, generate_fitting
from dlc.errors import DlcError
from dlc.ir import FitConfig, Graph
from dlc.lm.base import LM, GenerateRequest, ScoreRequest
from dlc.engine.metrics import match_label
from dlc.rng import Rng
from dlc.engine.vi import NEG_INF, argmax, importance_weights, posterior_logits, reduce_logprobs


@dataclass
class Posterior:
    """The weighted samples of one hidden layer over a batch (rows are examples; rows may be ragged)."""

    node: str
    samples: list[list[str]]
    weights: list[list[float]]
    logits: list[list[float]]
    best: list[str]
    logp_children: list[list[float]] = field(default_factory=list)
    logp_prior: list[list[float]] | None = None
    logq: list[list[float]] | None = None
    logp_mi: list[list[float]] | None = None
    templates: list[list[str]] = field(default_factory=list)
    resampled: list[bool] = field(default_factory=list)
    # per example, the text of every other node while the samples were weighted (h* of the layers visited before
    # n, ĥ otherwise); empty when unknown (a hand-built posterior), which means the forward texts
    context: list[dict[str, str]] = field(default_factory=list)
    # "i,k" -> the character limit the texts of sample k's posterior prompt were clipped to (context budgeting)
    clipped: dict[str, int] = field(default_factory=dict)

    def context_of(self, trace: Trace, i: int) -> dict[str, str]:
        """The other nodes' texts with which example i's samples were weighted."""
        return dict(self.context[i]) if self.context else trace.example_texts(i)

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "weights": self.weights, "logits": self.logits, "best": self.best,
                "logp_children": self.logp_children, "logp_prior": self.logp_prior, "logq": self.logq,
                "logp_mi": self.logp_mi, "templates": self.templates, "resampled": self.resampled,
                **({"clipped": self.clipped} if self.clipped else {})}


def score_opts(config: FitConfig, offsets: Mapping[str, Sequence[float]] | None = None) -> ScoreOpts:
    """The scoring options of a config, with the trainer's current calibration offsets (if any)."""
    opts = ScoreOpts(output_logp=config.output_logp, hidden_logp=config.hidden_logp,
                     label_agg=getattr(config, "label_agg", "logsumexp"))
    return opts.with_offsets(offsets) if offsets else opts


def node_targets(graph: Graph, node: str, trace: Trace, posteriors: Mapping[str, Posterior]) -> list[str] | None:
    """The target of a layer per example: the label for the output layer, h* for a visited hidden layer."""
    if node == graph.output:
        return [e.target for e in trace.examples]
    if node in posteriors:
        return posteriors[node].best
    return None


def _as_layer_value(graph: Graph, node: str, text: str, fallback: str) -> str:
    """A proposal for a hidden *choice* layer must be one of its labels (else the forward output is kept)."""
    layer = graph.layers[node]
    if layer.output.kind != "choice":
        return text if text.strip() else fallback
    return match_label(text, layer.output.labels) or fallback


def infer_hidden(graph: Graph, prompts: Mapping[str, str], lms: Mapping[str, LM], trace: Trace,
                 config: FitConfig, rng: Rng, iteration: int,
                 offsets: Mapping[str, Sequence[float]] | None = None) -> dict[str, Posterior]:
    """Posterior samples, weights and h* for every hidden layer that has children (Alg. 3, top-down). A calibrated
    child scores its target with its current `offsets` (the distribution the network really outputs)."""
    opts = score_opts(config, offsets)
    strip = config.strip_options_for_hidden
    posteriors: dict[str, Posterior] = {}
    B = len(trace.examples)
    K = max(1, config.num_h_samples)
    for node in reversed(graph.order):
        if node == graph.output:
            continue
        children = graph.children(node)
        child_targets = {c: node_targets(graph, c, trace, posteriors) for c in children}
        children = tuple(c for c in children if child_targets[c] is not None)
        if not children:
            continue
        layer = graph.layers[node]
        resample = [not (config.rewrite_loss_only and trace.correct[i]) for i in range(B)]
        # the values of the other nodes while n's samples are weighted: h* of the layers visited so far, else ĥ
        known = [dict(trace.example_texts(i), **{m: posteriors[m].best[i] for m in posteriors}) for i in range(B)]

        # 1. proposals from the posterior mixture
        comps = layer.backward.posterior
        gen_reqs: list[GenerateRequest] = []
        where: list[tuple[int, int]] = []
        used: list[list[str]] = [[] for _ in range(B)]
        q_prompts: dict[tuple[int, int], Any] = {}
        comp_of: dict[tuple[int, int], Any] = {}

        def q_request(i: int, k: int, limit: int | None = None) -> GenerateRequest:
            """Sample k of example i from its mixture component; with `limit`, every text of the example (inputs,
            ĥ, children's targets) clipped to that many characters (context budgeting, engine/budget.py)."""
            texts = trace.example_texts(i)
            clip = (lambda t: clip_text(t, limit)) if limit is not None else (lambda t: t)
            texts = {n: clip(t) for n, t in texts.items()}
            fvars = layer_variables(graph, layer, prompts[node], texts, strip_hidden_options=strip)
            fvars["forward"] = render_forward(graph, layer, prompts[node], texts, strip_hidden_options=strip)
            fvars["output"] = texts[node]
            fvars["target"] = "\n\n".join(clip(child_targets[c][i]) for c in children)  # type: ignore[index]
            fvars["next_prompt"] = "\n\n".join(prompts[c] for c in children)
            comp = comp_of[(i, k)]
            pool = templates.messages(comp.template.text)
            v = dict(fvars, message=pool[k % len(pool)] if pool else "")
            try:
                text = templates.render(comp.template.text, v)
            except DlcError as e:
                raise e.with_node(node)
            p = as_backward_prompt(layer, text)
            q_prompts[(i, k)] = p
            return GenerateRequest(
                prompt=p, max_tokens=layer.posterior_max_tokens(), temperature=config.bwd_temp,
                stop=layer.posterior_stop(), n=1, tag=f"{node}/posterior",
                seed=rng.seed_for("iter", iteration, "node", node, "posterior", i, k))

        for i in range(B):
            if not resample[i] or not comps:
                continue
            for k in range(K):
                r = rng.derive("iter", iteration, "node", node, "posterior", i, k)
                comp_of[(i, k)] = comps[0] if len(comps) == 1 else \
                    r.choices(comps, weights=[c.weight for c in comps])[0]
                used[i].append(comp_of[(i, k)].template.name)
                gen_reqs.append(q_request(i, k))
                where.append((i, k))
        clipped: dict[str, int] = {}

        def clipped_request(j: int, attempt: int) -> GenerateRequest | None:
            """Over the context: clip the example's texts to the longest one halved `attempt` times (recorded)."""
            i, k = where[j]
            texts = [*trace.example_texts(i).values(), *(child_targets[c][i] for c in children)]  # type: ignore
            limit = clip_limit(texts, attempt)
            if limit is None:
                return None
            clipped[f"{i},{k}"] = limit
            return q_request(i, k, limit)

        bwd_lm = lm_for(lms, layer.backward_model, node)
        results, _steps = generate_fitting(bwd_lm, gen_reqs, node, clipped_request,
                                           "the posterior prompt with its texts clipped")
        samples: list[list[str]] = [[] if resample[i] and comps else [trace.texts[node][i]] for i in range(B)]
        for (i, k), res in zip(where, results):
            samples[i].append(_as_layer_value(graph, node, res.texts[0].strip() if res.texts else "",
                                              trace.texts[node][i]))

        # 2. weights: child log-likelihoods (+ prior − log q − MI)
        accuracy_mode = config.output_scoring == "accuracy"
        logp_children = [[0.0] * len(samples[i]) for i in range(B)]
        logp_mi = [[0.0] * len(samples[i]) for i in range(B)] if config.mi_regularization else None
        for c in children:
            cl = graph.layers[c]
            c_lm = lm_for(lms, cl.model, c)
            tag = f"{c}/posterior_weight"
            # a generative output in accuracy mode contributes the 0/1 correctness of its greedy answer (below),
            # added to the other children's terms like a log-likelihood; it is not scored
            gen_accuracy = accuracy_mode and c == graph.output and cl.output.kind != "choice"
            spans: list[tuple[int, int, int, int]] = []
            reqs: list[ScoreRequest] = []
            for i in range(B):
                tgt = child_targets[c][i]  # type: ignore[index]
                for k, h in enumerate(samples[i]):
                    texts = dict(known[i], **{node: h})
                    ctx = layer_context(graph, cl, prompts[c], texts, strip_hidden_options=strip)
                    if is_empty_text(cl, tgt):
                        continue                  # log p("" | h) is not measurable: no term (the same for every k)
                    if not gen_accuracy:
                        rr = target_logp_requests(graph, cl, ctx, tgt, tag)
                        spans.append((i, k, len(reqs), len(rr)))
                        reqs.extend(rr)
                    if logp_mi is not None:
                        bare = {p: "" for p in cl.parents}
                        bare[node] = h
                        ctx0 = layer_context(graph, cl, prompts[c], bare, strip_hidden_options=strip)
                        rr = target_logp_requests(graph, cl, ctx0, tgt, f"{c}/posterior_mi")
                        spans.append((i, -1 - k, len(reqs), len(rr)))
                        reqs.extend(rr)
            res = score_batch(c_lm, reqs, c)
            for i, k, start, n in spans:
                tgt = child_targets[c][i]  # type: ignore[index]
                lp, dist = target_logp_from(graph, cl, res[start:start + n], tgt, opts)
                if k < 0:
                    logp_mi[i][-1 - k] += lp  # type: ignore[index]
                    continue
                if accuracy_mode and c == graph.output and dist is not None:
                    lp = 1.0 if cl.output.label_names[argmax(dist)] == tgt else 0.0
                logp_children[i][k] += lp
            if gen_accuracy:
                # generative output in accuracy mode: 0/1 correctness of the greedy answer given h
                g = cl.generation
                greqs, pos = [], []
                for i in range(B):
                    for k, h in enumerate(samples[i]):
                        texts = dict(known[i], **{node: h})
                        greqs.append(GenerateRequest(prompt=layer_context(graph, cl, prompts[c], texts,
                                                                          strip_hidden_options=strip),
                                                     max_tokens=max(1, g.max_tokens), temperature=0.0, stop=g.stop,
                                                     tag=f"{c}/posterior_weight"))
                        pos.append((i, k))
                for (i, k), gr in zip(pos, generate_batch(c_lm, greqs, c)):
                    out = gr.texts[0].strip() if gr.texts else ""
                    logp_children[i][k] += 1.0 if output_correct(graph, out, child_targets[c][i]) else 0.0  # type: ignore[index]

        logp_prior = None
        if config.include_prior and not accuracy_mode:
            n_lm = lm_for(lms, layer.model, node)
            reqs, spans2 = [], []
            for i in range(B):
                ctx = trace.nodes[node].contexts[i]
                for k, h in enumerate(samples[i]):
                    if is_empty_text(layer, h):
                        continue
                    rr = target_logp_requests(graph, layer, ctx, h, f"{node}/posterior_prior")
                    spans2.append((i, k, len(reqs), len(rr)))
                    reqs.extend(rr)
            res = score_batch(n_lm, reqs, node)
            logp_prior = [[NEG_INF if is_empty_text(layer, h) else 0.0 for h in samples[i]] for i in range(B)]
            for i, k, start, n in spans2:
                logp_prior[i][k] = target_logp_from(graph, layer, res[start:start + n], samples[i][k], opts)[0]

        logq = None
        if config.correct_weighting and not accuracy_mode:
            reqs, pos = [], []
            for (i, k), p in q_prompts.items():
                if is_empty_text(layer, samples[i][k]):
                    continue
                reqs.append(ScoreRequest(prompt=p, continuation=samples[i][k], tag=f"{node}/posterior_q"))
                pos.append((i, k))
            res = score_batch(bwd_lm, reqs, node)
            logq = [[NEG_INF if is_empty_text(layer, h) else 0.0 for h in samples[i]] for i in range(B)]
            for (i, k), r in zip(pos, res):
                logq[i][k] = reduce_logprobs(r.logprobs, config.hidden_logp)

        logits, weights, best = [], [], []
        for i in range(B):
            lg = posterior_logits(logp_children[i], logp_prior=logp_prior[i] if logp_prior else None,
                                  logq=logq[i] if logq else None, logp_mi=logp_mi[i] if logp_mi else None)
            if logp_prior is not None or logq is not None:   # an empty sample has no log p(h) or log q(h)
                lg = [NEG_INF if is_empty_text(layer, h) else v for h, v in zip(samples[i], lg)]
            w = importance_weights(lg, config.posterior_temp)
            logits.append(lg)
            weights.append(w)
            best.append(samples[i][argmax(w)] if samples[i] else trace.texts[node][i])
        post = Posterior(node=node, samples=samples, weights=weights, logits=logits, best=best,
                         logp_children=logp_children, logp_prior=logp_prior, logq=logq, logp_mi=logp_mi,
                         templates=used, resampled=resample, context=known, clipped=clipped)
        if config.use_h_argmax:
            post.samples = [[b] for b in best]
            post.weights = [[1.0] for _ in best]
        posteriors[node] = post
    return posteriors


__all__ = ["Posterior", "infer_hidden", "node_targets", "score_opts"]

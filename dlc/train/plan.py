"""The cost plan of a fit: LLM requests per training iteration by kind, per validation, and a completion-token bound,
computed before anything runs (`dlc fit --dry-run` prints it)."""
from __future__ import annotations

from collections import Counter
from typing import Any

from dlc.engine.calibration import calibrated
from dlc.engine.labels import verbalizers
from dlc.train.config import check_config
from dlc.ir import FitConfig, Graph


def validations(iters: int, val_freq: int, do_first_eval: bool) -> int:
    """How many iterations t = 0..iters validate (trainer.py: t % val_freq == 0 or t == iters, and t = 0 only with
    do_first_eval), in closed form: `dlc fit --set fit.iters=100000000000 --dry-run` answers at once."""
    if iters <= 0:
        return 1 if do_first_eval else 0
    freq = max(1, val_freq)
    return iters // freq + (1 if do_first_eval else 0) + (1 if iters % freq else 0)


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
        gen_tokens += B * K * lay.posterior_max_tokens()
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
        if n == graph.output and config.output_scoring == "accuracy" and lay.output.kind != "choice":
            # judged by greedy answers, never scored (engine/prompts.score_candidates: by_answer)
            kinds["candidate_generate"] += steps * cands * B * ins * outs
            gen_tokens += steps * cands * B * ins * outs * lay.generation.max_tokens
        else:
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
    out = graph.layers[graph.output]
    if calibrated(out):
        # the offsets are refitted on the calibration set at every validation (its forward pass, every layer)
        n_cal = n_train if config.calibration_size < 0 else min(n_train, config.calibration_size)
        for n in graph.order:
            if graph.layers[n].output.kind == "choice":
                per_val["calibration_score"] += n_cal * n_score(n)
            else:
                per_val["calibration_generate"] += n_cal
    vals = validations(config.iters, config.val_freq, config.do_first_eval)
    per_iter = dict(sorted(kinds.items()))
    return {"batch_size": B, "iterations": config.iters, "per_iteration": per_iter,
            "per_iteration_total": sum(per_iter.values()), "per_validation": dict(per_val), "validations": vals,
            "total_requests": sum(per_iter.values()) * config.iters + sum(per_val.values()) * vals,
            "max_completion_tokens_per_iteration": gen_tokens, "trained_layers": list(names)}

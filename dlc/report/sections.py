"""The sections of one run's HTML report (dlc.report.html assembles them into a page).

Each function takes a loaded run (`dlc.report.html.RunView`: its typed files, read through dlc.artifacts) and returns
one `<section>` with a stable id. A section whose data the run does not hold (no hidden layer, no calibration, an
unfinished run) still appears, saying what is missing, so every report has the same outline. Texts from the run
are escaped (`esc`, or the helpers of dlc.report.markup, which escape what they are given).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from dlc.artifacts.records import IterationRecord
from dlc.report.markup import (Raw, badge, delta, facc, fint, fnum, fseconds, note, section, setting, table,
                               text_block, word_diff)
from dlc.report.stats import classification_report
from dlc.report.svg import PALETTE, Series, chart_svg, esc, network_svg

if TYPE_CHECKING:
    from dlc.artifacts.records import ClassReport
    from dlc.report.html import RunView

HIDDEN_EXAMPLES = 3          # hidden samples are shown for the first few examples of each training batch
CONFUSION_MAX_CLASSES = 12   # a larger matrix (a generated output) is summarised instead


def summary(v: "RunView") -> str:
    res, usage = v.result, v.usage
    cards = [("dev accuracy", Raw(delta(res.baseline.dev_accuracy, res.dev_accuracy)) if res else "–"),
             ("test accuracy", Raw(delta(res.baseline.test_accuracy, res.test_accuracy)) if res else "–"),
             ("iterations", f"{v.done_iterations} / {v.config.iters if v.config.iters is not None else '?'}"),
             ("tokens", fint(v.tokens)), ("LLM calls", fint(usage.get("calls"))),
             ("wall time", fseconds(usage.get("wall_seconds")))]
    body = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">'
        f'{val.html if isinstance(val, Raw) else esc(val)}</div></div>' for k, val in cards) + "</div>"
    kind = "ok" if v.status == "finished" else "info" if v.status == "stopped early" else "no"
    body += f"<p>{badge(v.status, kind)} {esc(v.status_detail)}</p>"
    return section("summary", "Summary", body)


def network(v: "RunView") -> str:
    g = v.graph
    rows = [[name, ", ".join(lay.parents), lay.template.name, lay.output.kind
             + (f" {{{', '.join(lay.output.label_names)}}}" if lay.output.kind == "choice" else ""),
             lay.model, "trainable" if lay.trainable else "fixed"] for name, lay in g.layers.items()]
    body = (f'<div class="net">{network_svg(g, uid="net")}</div>'
            + table(["layer", "reads", "template", "output", "model", "prompt"], rows)
            + note(f"inputs: {', '.join(g.inputs)} · output layer: {g.output} · target field: {g.target} · "
                   f"metric: {g.metric}"))
    return section("network", "Network", body)


def prompts(v: "RunView") -> str:
    parts = []
    for name in v.graph.order:
        before, after = v.graph.layers[name].prompt, v.final_prompts.get(name, v.graph.layers[name].prompt)
        tag = badge("unchanged") if before == after else badge("learned", "ok")
        fixed = "" if v.graph.layers[name].trainable else " " + badge("fixed")
        parts.append(f"<h3>{esc(name)} {tag}{fixed}</h3>"
                     f'<div class="grid2"><div><div class="muted">before</div>{text_block(before, "prompt")}</div>'
                     f'<div><div class="muted">after (word diff: <del>removed</del> <ins>added</ins>)</div>'
                     f'<div class="prompt">{word_diff(before, after)}</div></div></div>')
    which = ("the learned (best) prompts of result.json" if v.result else
             "the best prompts so far (the run is not finished)")
    return section("prompts", "Prompts before → after", "".join(parts), intro=f"After: {which}.")


def curve(v: "RunView") -> str:
    trace = v.trace
    dev = [(r.iteration, r.dev) for r in trace if r.dev is not None]
    best = [(r.iteration, r.best_dev) for r in trace if r.best_dev is not None]
    train = [(r.iteration, r.train_acc) for r in trace if r.train_acc is not None]
    elbo = [(r.iteration, r.elbo) for r in trace if r.elbo is not None]
    per_iter = tokens_per_iteration(trace)
    acc = chart_svg([Series("dev", dev, PALETTE[0]), Series("best dev", best, PALETTE[2], dashed=True),
                     Series("train batch", train, PALETTE[1], dashed=True)],
                    title="Accuracy", y_label="accuracy", y_range=(0.0, 1.0))
    el = chart_svg([Series("ELBO", elbo, PALETTE[3])], title="ELBO of the chosen prompts", y_label="ELBO")
    tok = chart_svg([Series("tokens", per_iter, PALETTE[5], bars=True,
                            labels=[f"iteration {i}: {int(t):,} tokens" for i, t in per_iter])],
                    title="Tokens per iteration", y_label="tokens")
    return section("curve", "Learning curve", f'<div class="charts">{acc}{el}{tok}</div>',
                   intro="Dev accuracy on validated iterations, the accuracy of the forward pass on each training "
                         "batch, the ELBO of the prompts chosen at each iteration, and the prompt + completion "
                         "tokens each iteration spent (the last one is the final validation).")


def tokens_per_iteration(trace: Sequence[IterationRecord]) -> list[tuple[int, float]]:
    """Each record's `tokens` is the run's running total: the differences are what each iteration spent."""
    out, prev = [], 0
    for r in trace:
        if r.tokens is not None:
            out.append((r.iteration, float(r.tokens - prev)))
            prev = r.tokens
    return out


def _updates(rec: IterationRecord) -> list[tuple[str, Mapping[str, Any]]]:
    """(layer, update record) of an iteration, one per step when a layer made several."""
    out = []
    for node, upd in rec.layers.items():
        for u in (upd if isinstance(upd, list) else [upd]):
            if isinstance(u, Mapping):
                out.append((node, u))
    return out


def _update_table(u: Mapping[str, Any]) -> str:
    cands = [str(c) for c in u.get("candidates") or []]
    elbo, reward = list(u.get("elbo") or []), list(u.get("reward") or [])
    scored_on = u.get("scored_on")
    chosen = u.get("chosen_index")
    proposals = [p for p in (u.get("proposals") or []) if isinstance(p, Mapping)]
    origin = {str(p.get("text", "")).strip(): p.get("message") for p in proposals if not p.get("rejected")}
    rows, classes = [], []
    for i, c in enumerate(cands):
        src = ("current prompt" if c == str(u.get("current", "")).strip() else
               f"proposal: {origin[c]}" if origin.get(c) else "proposal" if c in origin else "memory")
        row = [i, Raw(text_block(c)), src, elbo[i] if i < len(elbo) else None,
               reward[i] if i < len(reward) else None]
        if scored_on:
            row.append(scored_on[i] if i < len(scored_on) else None)
        row.append(Raw(badge("chosen", "ok")) if i == chosen else "")
        rows.append(row)
        classes.append("chosen" if i == chosen else "")
    headers = ["#", "candidate", "from", "ELBO", "score"] + (["scored on"] if scored_on else []) + [""]
    out = table(headers, rows, numeric=(0, 3, 4, 5) if scored_on else (0, 3, 4), row_classes=classes)
    rejected = [p for p in proposals if p.get("rejected")]
    if rejected:
        out += "<div class=\"muted\">rejected before scoring:</div>" + table(
            ["reason", "proposal"], [[p.get("rejected"), Raw(text_block(str(p.get("text", ""))))] for p in rejected])
    return out


def _iteration_line(rec: IterationRecord) -> str:
    bits = []
    if rec.train_acc is not None:
        bits.append(f"train batch accuracy {facc(rec.train_acc)}")
    if rec.elbo is not None:
        bits.append(f"ELBO {fnum(rec.elbo)}")
    if rec.dev is not None:
        bits.append(f"dev {facc(rec.dev)} (best {facc(rec.best_dev)})")
    if rec.tokens is not None:
        bits.append(f"{rec.tokens:,} tokens so far")
    flags = []
    if rec.baseline:
        flags.append(badge("baseline validation", "info"))
    if rec.improved is not None:
        flags.append(badge("improved", "ok") if rec.improved else badge("not better", "no"))
    if rec.backtracked:
        flags.append(badge("backtracked to the best prompts", "no"))
    for why in (rec.skipped, rec.stopped):
        if why:
            flags.append(badge(why))
    return esc(" · ".join(bits)) + (" " + " ".join(flags) if flags else "")


def iterations(v: "RunView") -> str:
    if not v.trace:
        return section("iterations", "Iterations", note("No iteration finished yet."))
    parts = []
    last = v.trace[-1].iteration
    for rec in v.trace:
        ups = _updates(rec)
        title = f"Iteration {rec.iteration}" + (" (final validation)" if not ups and rec.iteration == last
                                                and rec.train_acc is None else "")
        body = f"<p>{_iteration_line(rec)}</p>"
        for node, u in ups:
            step = f", step {u.get('step')}" if isinstance(rec.layers.get(node), list) else ""
            body += f"<h3>layer {esc(node)}{esc(step)}</h3>" + _update_table(u)
        if not ups and rec.train_acc is not None:
            body += note("No prompt update this iteration.")
        opened = " open" if rec.iteration in (v.trace[0].iteration, last) else ""
        parts.append(f"<details{opened}><summary>{esc(title)}</summary>{body}</details>")
    return section("iterations", "Iterations: candidates and choices", "".join(parts),
                   intro="Per iteration and trained layer: every candidate prompt with its ELBO and its score (the "
                         "ELBO with the exploration penalty, what the choice maximises), where it came from, the "
                         "chosen one, and proposals rejected before scoring.")


def _context_text(ctx: Any) -> str:
    if isinstance(ctx, Mapping):
        return "\n".join(str(ctx.get(k)) for k in ("system", "user", "prefix") if ctx.get(k))
    return "" if ctx is None else str(ctx)


def _row(rows: Any, i: int) -> list[Any]:
    return list(rows[i]) if isinstance(rows, list) and i < len(rows) and isinstance(rows[i], list) else []


def hidden(v: "RunView") -> str:
    parts = []
    for rec in v.trace:
        hid = rec.details.get("hidden")
        fwd = rec.details.get("forward") if isinstance(rec.details.get("forward"), Mapping) else {}
        if not isinstance(hid, Mapping) or not hid:
            continue
        body = ""
        for node, post in hid.items():
            if not isinstance(post, Mapping):
                continue
            samples, node_fwd = post.get("samples") or [], (fwd.get("nodes") or {}).get(node) or {}
            for i in range(min(HIDDEN_EXAMPLES, len(samples))):
                ids, targets = fwd.get("ids") or [], fwd.get("targets") or []
                weights, logits, tmpl = _row(post.get("weights"), i), _row(post.get("logits"), i), \
                    _row(post.get("templates"), i)
                best = (post.get("best") or [None] * (i + 1))[i] if i < len(post.get("best") or []) else None
                rows, classes = [], []
                for k, s in enumerate(_row(samples, i)):
                    w = weights[k] if k < len(weights) else None
                    bar = (f'<span class="bar" style="width:{max(1, round(float(w) * 120))}px"></span> '
                           if isinstance(w, (int, float)) else "")
                    rows.append([k, Raw(text_block(str(s))), tmpl[k] if k < len(tmpl) else None,
                                 Raw(bar + esc(fnum(w))) if w is not None else None,
                                 logits[k] if k < len(logits) else None,
                                 Raw(badge("h*", "ok")) if s == best else ""])
                    classes.append("chosen" if s == best else "")
                ctx = _context_text((node_fwd.get("contexts") or [None] * (i + 1))[i]
                                    if i < len(node_fwd.get("contexts") or []) else None)
                out_i = (node_fwd.get("outputs") or [])[i] if i < len(node_fwd.get("outputs") or []) else None
                body += (f"<h3>layer {esc(node)} · example {esc(ids[i] if i < len(ids) else i)} · target "
                         f"{esc(targets[i] if i < len(targets) else '?')}</h3>"
                         + (f'<div class="muted">the layer\'s input</div>{text_block(ctx[:1200])}' if ctx else "")
                         + (f'<div class="muted">forward output ĥ</div>{text_block(str(out_i))}'
                            if out_i is not None else "")
                         + table(["#", "sample h", "from", "posterior weight", "logit", ""], rows,
                                 numeric=(0, 3, 4), row_classes=classes))
        opened = " open" if not parts else ""
        parts.append(f"<details{opened}><summary>Iteration {rec.iteration}</summary>{body}</details>")
    if not parts:
        why = ("the network has no hidden layer" if len(v.graph.order) == 1 else
               "no training iteration recorded hidden samples")
        return section("hidden", "Hidden samples", note(f"No hidden samples: {why}."))
    return section("hidden", "Hidden samples and posterior weights", "".join(parts),
                   intro=f"For the first {HIDDEN_EXAMPLES} examples of each training batch: the samples drawn for "
                         "each hidden layer, their posterior weights (softmax of the logits) and h*, the sample "
                         "that became the layer's target.")


def _matrix(rep: "ClassReport") -> str:
    rows_in = list(dict.fromkeys([t for t in rep.labels if t in rep.confusion] + list(rep.confusion)))
    cols = list(dict.fromkeys(list(rows_in) + [c for row in rep.confusion.values() for c in row]))
    peak = max([int(n) for row in rep.confusion.values() for n in row.values()] + [1])
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>"
    body = ""
    for t in rows_in:
        row = rep.confusion[t]
        cells = ""
        for c in cols:
            n = int(row.get(c, 0))
            hue = "22,163,74" if c == t else "220,38,38"
            cells += f'<td class="n" style="background: rgba({hue},{n / peak * 0.45:.3f})">{n}</td>'
        body += f"<tr><th>{esc(t)}</th>{cells}</tr>"
    return (f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"
            f'<div class="muted">accuracy {esc(facc(rep.accuracy))} on {rep.n} examples</div>')


def confusion(v: "RunView") -> str:
    res = v.result
    if res is None:
        return section("confusion", "Confusion matrices", note("The run is not finished: no final evaluation yet."))
    out = v.graph.layers[v.graph.output].output
    labels = out.label_names if out.kind == "choice" else ()
    parts = []
    for split in ("dev", "test"):
        p = res.predictions.get(split)
        after = res.dev if split == "dev" else res.test
        before = None
        if p is not None:      # both sides from the per-example predictions: the same examples, one layout
            before = classification_report([str(x) for x in p.targets], [str(x) for x in p.baseline], labels)
            after = classification_report([str(x) for x in p.targets], [str(x) for x in p.final], labels)
        if after is None:
            parts.append(note(f"{split}: empty split, not evaluated."))
            continue
        if len(after.labels) > CONFUSION_MAX_CLASSES or (before and len(before.labels) > CONFUSION_MAX_CLASSES):
            parts.append(f"<h3>{esc(split)}</h3>" + note(
                f"{len(after.labels)} distinct answers: too many for a matrix. Accuracy "
                f"{facc(before.accuracy) if before else '–'} → {facc(after.accuracy)}."))
            continue
        left = _matrix(before) if before is not None else note("not recorded (an older run)")
        parts.append(f'<h3>{esc(split)}</h3><div class="grid2"><div><div class="muted">before training</div>{left}'
                     f'</div><div><div class="muted">after training</div>{_matrix(after)}</div></div>')
    return section("confusion", "Confusion matrices before → after", "".join(parts),
                   intro="Rows: true label, columns: predicted label; the initial prompts against the learned ones, "
                         "on the same examples.")


def calibration(v: "RunView") -> str:
    parts = []
    res = v.result
    if res and res.offsets:
        labels = list(dict.fromkeys(k for offs in res.offsets.values() for k in offs))
        parts.append("<h3>learned offsets</h3>" + table(
            ["layer"] + labels, [[node] + [f"{offs[k]:+.3f}" if k in offs else None for k in labels]
                                 for node, offs in res.offsets.items()], numeric=range(1, len(labels) + 1)))
    rows = []
    for rec in v.trace:
        cal = rec.details.get("calibration")
        if isinstance(cal, Mapping):
            offs = cal.get("offsets")
            rows.append([rec.iteration, cal.get("dev_raw"), cal.get("dev_calibrated"),
                         Raw(badge("kept", "ok")) if cal.get("kept") else Raw(badge("not kept")),
                         ", ".join(f"{float(x):+.3f}" for x in offs) if isinstance(offs, list) else None])
    if rows:
        parts.append("<h3>per validation</h3>" + table(
            ["iteration", "dev accuracy raw", "dev accuracy calibrated", "offsets", "fitted offsets (label order)"],
            rows, numeric=(0, 1, 2)))
    if not parts:
        return section("calibration", "Calibration", note("No calibrated layer in this run."))
    return section("calibration", "Calibration offsets", "".join(parts),
                   intro="Per-label log-offsets added to a calibrated layer's label scores; at each validation the "
                         "offsets are fitted and kept only when they pass the configured test.")


def cost(v: "RunView") -> str:
    u = v.usage
    be = u.get("backend") if isinstance(u.get("backend"), Mapping) else {}
    rows = [["LLM calls", fint(u.get("calls"))], ["answered by the cache", fint(u.get("cache_hits"))],
            ["prompt tokens", fint(u.get("prompt_tokens"))], ["completion tokens", fint(u.get("completion_tokens"))],
            ["tokens (prompt + completion)", fint(v.tokens)],
            ["decoded tokens (computed by the local backend)",
             fint(be.get("decoded_tokens")) if be else "not measured (no local backend)"],
            ["seconds inside the backend", fseconds(be.get("seconds")) if be else "–"],
            ["wall time", fseconds(u.get("wall_seconds"))]]
    out = table(["", "value"], rows, numeric=(1,))
    per_model = u.get("per_model")
    if isinstance(per_model, Mapping) and per_model:
        out += "<h3>per model</h3>" + table(
            ["model", "calls", "cache hits", "prompt tokens", "completion tokens"],
            [[m, fint(r.get("calls")), fint(r.get("cache_hits")), fint(r.get("prompt_tokens")),
              fint(r.get("completion_tokens"))] for m, r in per_model.items() if isinstance(r, Mapping)],
            numeric=(1, 2, 3, 4))
    phases = be.get("phases") if be else None
    if isinstance(phases, Mapping) and phases:
        out += "<h3>backend work per phase</h3>" + table(
            ["phase", "seconds", "decoded tokens", "completion tokens"],
            [[k, fseconds(r.get("seconds")), fint(r.get("decoded_tokens")), fint(r.get("completion_tokens"))]
             for k, r in phases.items() if isinstance(r, Mapping)], numeric=(1, 2, 3))
    return section("cost", "Cost", out, intro="Usage of the whole run (training, validations and the final "
                                              "evaluation; summed over the processes of a resumed run).")


def settings(v: "RunView") -> str:
    c = v.config
    rows = [[f"fit.{k}", setting(val)] for k, val in sorted(c.fit.items())]
    rows += [[f"data.{k}", setting(val)] for k, val in sorted(c.data.items())]
    for m, cfg in sorted(c.models.items()):
        if isinstance(cfg, Mapping):
            rows += [[f"model.{m}.{k}", setting(val)] for k, val in sorted(cfg.items()) if val not in (None, "")]
    body = table(["setting", "value"], rows)
    if c.overrides:
        body += "<h3>--set overrides</h3>" + table(["key", "value"], sorted(c.overrides.items()))
    if c.argv:
        body += "<h3>command</h3>" + text_block("dlc " + " ".join(c.argv))
    return section("settings", "Settings", body)


__all__ = ["calibration", "confusion", "cost", "curve", "hidden", "iterations", "network", "prompts", "settings",
           "summary", "tokens_per_iteration"]

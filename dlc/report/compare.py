"""`dlc report RUN1 RUN2 ...`: several runs side by side on one page (dlc.report.html writes it).

Each run's dev/test accuracy gets a 95% Wilson score interval over its evaluated examples (how far the accuracy of
one run could move with other examples of the same task); runs of the same network and task also get the mean of
their accuracies ± the 95% Student-t interval over runs (dlc.report.stats.mean_ci, what `dlc eval --seeds` prints:
the paper's "mean of 3 seeds ± 95% CI").
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from dlc.report.markup import Raw, badge, facc, fint, fseconds, note, page, section, table, word_diff
from dlc.report.stats import mean_ci
from dlc.report.svg import PALETTE, Series, chart_svg, esc

if TYPE_CHECKING:
    from dlc.report.html import RunView

NAV = (("runs", "Runs"), ("accuracy", "Accuracy"), ("curves", "Dev curves"), ("prompts", "Prompts"),
       ("cost", "Cost"))


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion p observed on n trials (sensible at p = 0 or 1 and small n,
    where the normal approximation collapses to a point)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _n(v: "RunView", split: str) -> int | None:
    res = v.result
    if res is None:
        return None
    rep = res.dev if split == "dev" else res.test
    if rep is not None:
        return rep.n
    p = res.predictions.get(split)
    return len(p.ids) if p is not None else None


def acc_with_interval(acc: float | None, n: int | None) -> str:
    """'0.750 [0.41, 0.93]' (escaped markup), or a dash."""
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):
        return '<span class="muted">–</span>'
    if not n:
        return esc(facc(acc))
    lo, hi = wilson(float(acc), n)
    return f'{esc(facc(acc))} <span class="muted">[{lo:.2f}, {hi:.2f}] n={n}</span>'


def _runs(views: Sequence["RunView"]) -> str:
    rows = []
    for v in views:
        c = v.config
        kind = "ok" if v.status == "finished" else "info" if v.status == "stopped early" else "no"
        rows.append([v.name, c.net, c.task, c.seed, f"{v.done_iterations}/{c.iters if c.iters is not None else '?'}",
                     Raw(badge(v.status, kind)), str(v.run.path)])
    return section("runs", "Runs", table(["run", "network", "task", "seed", "iterations", "status", "directory"],
                                          rows, numeric=(3, 4)))


def _accuracy(views: Sequence["RunView"]) -> str:
    rows = []
    for v in views:
        res = v.result
        if res is None:
            rows.append([v.name, None, None, None, None])
            continue
        rows.append([v.name, Raw(esc(facc(res.baseline.dev_accuracy))),
                     Raw(acc_with_interval(res.dev_accuracy, _n(v, "dev"))),
                     Raw(esc(facc(res.baseline.test_accuracy))),
                     Raw(acc_with_interval(res.test_accuracy, _n(v, "test")))])
    body = table(["run", "dev before", "dev after [95% interval]", "test before", "test after [95% interval]"],
                 rows, numeric=(1, 2, 3, 4))
    groups: dict[tuple[str, str | None], list["RunView"]] = {}
    for v in views:
        if v.result is not None:
            groups.setdefault((v.config.net, v.config.task), []).append(v)
    grows = []
    for (net, task), vs in groups.items():
        row: list[object] = [net, task, len(vs)]
        for get in (lambda r: r.baseline.dev_accuracy, lambda r: r.dev_accuracy,
                    lambda r: r.baseline.test_accuracy, lambda r: r.test_accuracy):
            vals = [get(v.result) for v in vs]
            vals = [x for x in vals if x is not None and not math.isnan(x)]
            row.append(str(mean_ci(vals)) if vals else None)
        grows.append(row)
    if any(len(vs) > 1 for vs in groups.values()):
        body += ("<h3>mean over runs of the same network and task ± 95% t-interval</h3>"
                 + table(["network", "task", "runs", "dev before", "dev after", "test before", "test after"],
                         grows, numeric=(2, 3, 4, 5, 6)))
    return section("accuracy", "Accuracy", body,
                   intro="After: the learned prompts. Brackets: the 95% Wilson score interval over the run's "
                         "evaluated examples.")


def _curves(views: Sequence["RunView"]) -> str:
    series = [Series(v.name, [(r.iteration, r.dev) for r in v.trace if r.dev is not None],
                     PALETTE[i % len(PALETTE)]) for i, v in enumerate(views)]
    return section("curves", "Dev accuracy per iteration",
                   chart_svg(series, title="Dev accuracy", y_label="accuracy", y_range=(0.0, 1.0), width=720,
                             height=280))


def _prompts(views: Sequence["RunView"]) -> str:
    layers = list(dict.fromkeys(n for v in views for n in v.graph.order))
    heads = ["layer"] + [v.name for v in views]
    rows = []
    for node in layers:
        row: list[object] = [node]
        for v in views:
            if node not in v.graph.layers:
                row.append(None)
                continue
            before = v.graph.layers[node].prompt
            after = v.final_prompts.get(node, before)
            tag = badge("unchanged") if before == after else badge("learned", "ok")
            row.append(Raw(f'{tag}<div class="prompt">{word_diff(before, after)}</div>'))
        rows.append(row)
    return section("prompts", "Prompts", table(heads, rows),
                   intro="Each run's learned prompt, as a word diff against its initial prompt.")


def _cost(views: Sequence["RunView"]) -> str:
    rows = []
    for v in views:
        u = v.usage
        be = u.get("backend") if isinstance(u.get("backend"), dict) else {}
        rows.append([v.name, fint(u.get("calls")), fint(u.get("cache_hits")), fint(u.get("prompt_tokens")),
                     fint(u.get("completion_tokens")), fint(v.tokens),
                     fint(be.get("decoded_tokens")) if be else "–", fseconds(u.get("wall_seconds"))])
    return section("cost", "Cost", table(["run", "calls", "cache hits", "prompt tokens", "completion tokens",
                                          "tokens", "decoded tokens", "wall time"], rows,
                                         numeric=(1, 2, 3, 4, 5, 6, 7))
                   + note("Decoded tokens: what a local backend computed (– for remote or scripted backends)."))


def page_of(views: Sequence["RunView"]) -> str:
    nets = list(dict.fromkeys(v.config.net for v in views))
    meta = esc(f"{len(views)} runs · network{'s' if len(nets) > 1 else ''} {', '.join(nets)}")
    first = [v for v in views if v.result is not None]
    body = [_runs(views), _accuracy(views), _curves(views), _prompts(views), _cost(views)]
    if not first:
        body.insert(1, note("None of these runs is finished: accuracies appear once a run's final evaluation ran."))
    return page("dlc report — comparison", meta, NAV, body)


__all__ = ["acc_with_interval", "page_of", "wilson"]

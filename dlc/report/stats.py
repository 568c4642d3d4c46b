"""Evaluation statistics and run reports: accuracy, per-class accuracy, confusion, mean ± 95% CI, learning curves.

The paper reports "mean of 3 seeds; ± = 95% CI" (dln-reference §5): for n values x_i the interval is
mean ± t_{0.975, n-1} · s / sqrt(n) with s the sample standard deviation (n-1 denominator), i.e. a Student-t
interval, which is what `mean_ci` computes (the two-sided 97.5% t quantiles are tabulated below, so no scipy).
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from dlc.artifacts.records import ClassReport, IterationRecord, total_tokens
from dlc.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from dlc.artifacts.rundir import RunDir

# Two-sided 95% Student-t critical values t_{0.975, df}, df = 1..30 (standard table values, 4 decimals).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_T975_TAIL = ((40, 2.0211), (60, 2.0003), (120, 1.9799))


def t_critical(df: int) -> float:
    """t_{0.975, df}: the multiplier of the standard error in a two-sided 95% interval."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two values (df >= 1)")
    if df <= 30:
        return _T975[df - 1]
    prev_df, prev_t = 30, _T975[-1]
    for d, t in _T975_TAIL:
        if df <= d:  # interpolate linearly in 1/df, which is accurate to ~1e-4 between table rows
            w = (1 / df - 1 / d) / (1 / prev_df - 1 / d)
            return t + w * (prev_t - t)
        prev_df, prev_t = d, t
    w = (1 / df) / (1 / 120)
    return 1.9600 + w * (1.9799 - 1.9600)


@dataclass(frozen=True)
class MeanCI:
    """mean ± half_width (95% t-interval). `half_width` is None for a single value (no spread to estimate)."""

    mean: float
    half_width: float | None
    n: int
    values: tuple[float, ...] = ()

    def __str__(self) -> str:
        if self.half_width is None:
            return f"{self.mean:.4f}"
        return f"{self.mean:.4f} ± {self.half_width:.4f}"

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n, "values": list(self.values)}


def mean_ci(values: Sequence[float]) -> MeanCI:
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("mean_ci of no values")
    n = len(vals)
    mean = math.fsum(vals) / n
    if n == 1:
        return MeanCI(mean, None, 1, vals)
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
    return MeanCI(mean, t_critical(n - 1) * math.sqrt(var / n), n, vals)


# ------------------------------------------------------------------------------------------------ classification

# ClassReport (the per-split report of result.json and `dlc eval`) lives with the run files it is part of:
# dlc.artifacts.records; it is imported above so `from dlc.report.stats import ClassReport` keeps working.


def report_from_counts(confusion: Mapping[str, Mapping[str, int]], labels: Sequence[str] = (), *,
                       accuracy: float | None = None, per_class: Mapping[str, float] | None = None) -> ClassReport:
    """A ClassReport from confusion counts confusion[true][pred] (e.g. those an evaluation already made,
    dlc.train.evaluation.EvalResult): rows and columns in `labels` order (the graph's label names), then any other
    true class, then any other prediction (an unparseable generation gets its own column, so the matrix still sums
    to n); zero cells filled in. `accuracy` and `per_class` (the evaluation's own, under the graph's metric) win
    over the diagonal; a class without examples has accuracy NaN."""
    order = list(dict.fromkeys(list(labels) + sorted(confusion)))
    preds = {p for row in confusion.values() for p in row}
    cols = list(dict.fromkeys(order + sorted(preds - set(order))))
    conf: dict[str, dict[str, int]] = {t: {p: int((confusion.get(t) or {}).get(p, 0)) for p in cols} for t in order}
    n = sum(sum(row.values()) for row in conf.values())
    classes = {}
    for t in order:
        row_n = sum(conf[t].values())
        acc = (per_class or {}).get(t, (conf[t][t] / row_n) if row_n else float("nan"))
        classes[t] = {"accuracy": float(acc) if row_n else float("nan"), "n": row_n}
    if accuracy is None:
        accuracy = (sum(conf[t][t] for t in order) / n) if n else float("nan")
    return ClassReport(accuracy=accuracy, n=n, labels=tuple(order), per_class=classes, confusion=conf)


def classification_report(targets: Sequence[str], predictions: Sequence[str],
                          labels: Sequence[str] = ()) -> ClassReport:
    """Exact-match statistics of predictions against targets (see `report_from_counts` for the layout)."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    conf: dict[str, dict[str, int]] = {}
    for t, p in zip(targets, predictions):
        conf.setdefault(t, {}).setdefault(p, 0)
        conf[t][p] += 1
    return report_from_counts(conf, labels)


def format_class_report(rep: ClassReport, *, title: str = "") -> str:
    """A plain-text block: accuracy, per-class accuracy, confusion matrix (rows = true, columns = predicted)."""
    out = []
    if title:
        out.append(title)
    out.append(f"accuracy  {rep.accuracy:.4f}  ({round(rep.accuracy * rep.n)}/{rep.n})")
    if rep.per_class and len(rep.per_class) <= 50:
        w = max(8, *(len(k) for k in rep.per_class))
        out.append("per class")
        for lab, d in rep.per_class.items():
            acc = d["accuracy"]
            out.append(f"  {lab:<{w}}  {'   n/a' if math.isnan(acc) else f'{acc:.4f}'}  (n={int(d['n'])})")
        cols = list(next(iter(rep.confusion.values())).keys()) if rep.confusion else []
        if len(cols) <= 12:
            cw = max(5, *(len(c) for c in cols)) if cols else 5
            out.append("confusion (rows: true, columns: predicted)")
            out.append("  " + " " * w + "  " + " ".join(f"{c:>{cw}}" for c in cols))
            for t, row in rep.confusion.items():
                out.append(f"  {t:<{w}}  " + " ".join(f"{row[c]:>{cw}}" for c in cols))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ learning curves

@dataclass(frozen=True)
class CurvePoint:
    iteration: int
    dev_accuracy: float | None      # None on iterations without validation
    elbo: float | None
    train_accuracy: float | None
    tokens: int | None
    baseline: bool = False          # the first validation (the initial prompts: the bar to beat)
    improved: bool | None = None    # a later validation: its prompt set was kept as the new best


def learning_curve(trace: Iterable[IterationRecord]) -> list[CurvePoint]:
    """One point per trace record (RunDir.trace())."""
    return [CurvePoint(iteration=rec.iteration, dev_accuracy=rec.dev, elbo=rec.elbo, train_accuracy=rec.train_acc,
                       tokens=rec.tokens, baseline=rec.baseline, improved=rec.improved) for rec in trace]


def _bar(value: float, lo: float, hi: float, width: int) -> str:
    """A horizontal bar with 1/8-cell resolution."""
    if hi <= lo:
        frac = 1.0
    else:
        frac = min(1.0, max(0.0, (value - lo) / (hi - lo)))
    eighths = round(frac * width * 8)
    full, rem = divmod(eighths, 8)
    return "█" * full + ("" if rem == 0 else " ▏▎▍▌▋▊▉"[rem])


def format_learning_curve(points: Sequence[CurvePoint], *, width: int = 40) -> str:
    """The learning curve as text: one row per iteration, a bar for dev accuracy (on validated iterations) and
    the ELBO value, so the shape of training is visible in a terminal or a log."""
    if not points:
        return "no iterations recorded yet"
    elbos = [p.elbo for p in points if p.elbo is not None]
    lo_e, hi_e = (min(elbos), max(elbos)) if elbos else (0.0, 0.0)
    lines = [f"{'iter':>4}  {'dev acc':>7}  {'':<{width}}  {'ELBO':>9}  {'':<12}"]
    for p in points:
        dev = "" if p.dev_accuracy is None else f"{p.dev_accuracy:.3f}"
        bar = "" if p.dev_accuracy is None else _bar(p.dev_accuracy, 0.0, 1.0, width)
        el = "" if p.elbo is None else f"{p.elbo:9.3f}"
        ebar = "" if p.elbo is None else _bar(p.elbo, lo_e, hi_e, 12)
        lines.append(f"{p.iteration:>4}  {dev:>7}  {bar:<{width}}  {el:>9}  {ebar:<12}")
    devs = [p.dev_accuracy for p in points if p.dev_accuracy is not None]
    if devs:
        lines.append(f"dev accuracy: first {devs[0]:.3f}, best {max(devs):.3f}, last {devs[-1]:.3f}")
    return "\n".join(lines)


def plot_learning_curve(points: Sequence[CurvePoint], path: str | os.PathLike[str], *, title: str = "",
                        test: tuple[float | None, float | None] = (None, None)) -> Path:
    """PNG of dev accuracy and ELBO per iteration (matplotlib, headless Agg backend); `test` = test accuracy
    (before, after) training, drawn as markers at the first and last iteration."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        from dlc.errors import DlcUsageError

        raise DlcUsageError("plotting needs matplotlib", code="E140",
                            hint="pip install 'dlc[plot]' (or matplotlib)") from None
    fig = learning_figure(plt, points, test=test)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    buf = io.BytesIO()                      # drawn whole first: a failed draw leaves no half-written file
    fig.savefig(buf, dpi=100, format=out.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out


def plot_suffixes() -> tuple[str, ...] | None:
    """The file suffixes matplotlib can write a figure as (".png", ".svg", ".pdf", ".jpg", ...), or None without
    matplotlib (E140 says so when the plot is drawn)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return None
    return tuple(sorted("." + k for k in FigureCanvasBase.get_supported_filetypes()))


def learning_figure(plt: Any, points: Sequence[CurvePoint], *,
                    test: tuple[float | None, float | None] = (None, None)) -> Any:
    """The figure behind plot_learning_curve: dev accuracy with the baseline validation (a dashed line: the bar a
    new prompt set had to beat) and the validations whose prompts were kept marked, test accuracy before and after,
    the ELBO below; iterations are whole numbers on the x axis."""
    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    dev = [p for p in points if p.dev_accuracy is not None]
    if dev:
        ax1.plot([p.iteration for p in dev], [p.dev_accuracy for p in dev], marker="o", color="tab:blue",
                 label="dev accuracy")
    base = next((p for p in dev if p.baseline), dev[0] if dev else None)
    if base is not None:
        ax1.axhline(base.dev_accuracy, color="tab:gray", linestyle="--", linewidth=1,
                    label=f"baseline dev {base.dev_accuracy:.3f}")
    kept = [p for p in dev if p.improved]
    if kept:
        ax1.plot([p.iteration for p in kept], [p.dev_accuracy for p in kept], linestyle="none", marker="*",
                 markersize=14, color="tab:green", label="new prompts kept")
    xs = [p.iteration for p in points]
    for x, acc, lab, mk in ((min(xs) if xs else 0, test[0], "test before", "v"),
                            (max(xs) if xs else 0, test[1], "test after", "^")):
        if acc is not None:
            ax1.plot([x], [acc], linestyle="none", marker=mk, markersize=9, color="tab:red", label=f"{lab} {acc:.3f}")
    ax1.set_ylabel("accuracy")
    ax1.set_ylim(-0.02, 1.02)
    ax1.grid(alpha=0.3)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(loc="lower right", fontsize=8)
    el = [(p.iteration, p.elbo) for p in points if p.elbo is not None]
    if el:
        ax2.plot([e[0] for e in el], [e[1] for e in el], marker=".", color="tab:orange")
    ax2.set_ylabel("ELBO (selected prompts)")
    ax2.set_xlabel("iteration")
    ax2.grid(alpha=0.3)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# ------------------------------------------------------------------------------------------------ runs

def run_summary(run: "RunDir") -> dict[str, Any]:
    """A row of `dlc runs`: name, status, progress, scores, tokens (from the run's files, never re-computed)."""
    row: dict[str, Any] = {"run": str(run.path), "name": run.path.name}
    try:
        cfg = run.config()
        row["net"] = cfg.net
        row["iters"] = cfg.iters
        row["seed"] = cfg.seed
        row["created"] = cfg.created or ""
        ck = run.checkpoint()
        res = run.result()
    except Exception as e:  # a damaged run still gets a row, it is not a reason to hide the others
        row["status"] = "corrupted"
        row["error"] = str(e)
        return row
    usage: Mapping[str, Any] = {}
    if res is not None:
        row["status"] = "done"
        row["dev_accuracy"] = res.dev_accuracy
        row["test_accuracy"] = res.test_accuracy
        row["baseline_test_accuracy"] = res.baseline.test_accuracy
        if res.stopped:
            row["stopped"] = res.stopped      # finished before fit.iters (token budget)
        usage = res.usage
    else:
        row["status"] = "incomplete"
        row["dev_accuracy"] = ck.best_dev if ck else None
        usage = ck.usage if ck else {}
    row["done_iters"] = ck.iteration if ck else 0
    row["tokens"] = total_tokens(usage)
    row["calls"] = usage.get("calls")
    return row


def show_run(path: str | os.PathLike[str], args: Any = None) -> int:
    """`dlc show RUN`: the run's summary, its learning curve in the terminal, and a PNG of dev accuracy and ELBO
    per iteration (written to `--output` or `RUN/learning_curve.png`)."""
    from dlc.artifacts.rundir import RunDir

    run = RunDir.open(path)
    cfg = run.config()
    res = run.result()
    ck = run.checkpoint()
    trace = run.trace()
    points = learning_curve(trace)
    iters = "?" if cfg.iters is None else cfg.iters
    lines = [f"run      {run.path}", f"network  {cfg.net}   seed {cfg.seed}   "
             f"iterations {ck.iteration if ck else 0}/{iters}"]
    if res is not None:
        lines.append(f"result   dev {_fmt(res.dev_accuracy)}   test {_fmt(res.test_accuracy)}"
                     f"   (before training: dev {_fmt(res.baseline.dev_accuracy)}, "
                     f"test {_fmt(res.baseline.test_accuracy)})")
        if res.stopped:
            lines.append(f"stopped  early, after {res.iterations} of {iters} iterations: {res.stopped}")
        for node, text in res.prompts.items():
            lines.append(f"prompt   {node}: {text!r}")
        for node, offs in res.offsets.items():
            lines.append(f"offsets  {node}: " + ", ".join(f"{k} {v:+.3f}" for k, v in offs.items()))
    else:
        lines.append("result   (not finished: `dlc fit --resume " + str(run.path) + "` continues it)")
    made, rejected = proposal_counts(trace)
    if made:
        why = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "none"
        lines.append(f"proposals {made} made, {sum(rejected.values())} rejected before scoring ({why})")
    print("\n".join(lines))
    print()
    print(format_learning_curve(points))
    out = getattr(args, "output", None) or getattr(args, "png", None) or (run.path / "learning_curve.png")
    if points and not getattr(args, "no_plot", False):
        png = plot_learning_curve(points, out, title=f"{cfg.net} — {run.path.name}",
                                  test=(res.baseline.test_accuracy, res.test_accuracy) if res else (None, None))
        print(f"\nplot written to {png}")
    return 0


def proposal_counts(trace: Sequence[IterationRecord]) -> tuple[int, dict[str, int]]:
    """Proposals made over a run and how many were rejected before scoring, by reason (trace records)."""
    made, rejected = 0, {}  # type: int, dict[str, int]
    for rec in trace:
        for upd in rec.layers.values():
            for u in (upd if isinstance(upd, list) else [upd]):
                made += len(u.get("proposals") or [])
                for k, v in (u.get("rejected") or {}).items():
                    rejected[k] = rejected.get(k, 0) + int(v)
    return made, rejected


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"

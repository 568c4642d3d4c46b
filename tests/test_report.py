"""Report statistics (t-interval, per-class, confusion), learning curves and the PNG plot."""
from __future__ import annotations

import math

import pytest

from dlc.artifacts.records import IterationRecord
from dlc.report.stats import (classification_report, format_class_report, format_learning_curve, learning_curve,
                        mean_ci, plot_learning_curve, t_critical)


def test_t_critical_matches_table_and_scipy():
    assert t_critical(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_critical(2) == pytest.approx(4.3027, abs=1e-4)    # the paper's 3 seeds
    assert t_critical(10**6) == pytest.approx(1.96, abs=1e-3)
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 7, 19, 30, 31, 45, 60, 99, 120, 500):
        assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4), df
    with pytest.raises(ValueError):
        t_critical(0)


def test_mean_ci_by_hand():
    # three seeds 0.80, 0.85, 0.90: mean 0.85, s = 0.05, half width = 4.3027 * 0.05 / sqrt(3) = 0.12421
    ci = mean_ci([0.80, 0.85, 0.90])
    assert ci.mean == pytest.approx(0.85)
    assert ci.half_width == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-4)
    assert str(ci) == "0.8500 ± 0.1242"
    one = mean_ci([0.7])
    assert one.half_width is None and str(one) == "0.7000"
    assert mean_ci([0.5, 0.5, 0.5]).half_width == 0.0
    with pytest.raises(ValueError):
        mean_ci([])


def test_classification_report():
    t = ["a", "a", "b", "b", "c"]
    p = ["a", "b", "b", "b", "zz"]
    rep = classification_report(t, p, labels=["a", "b", "c"])
    assert rep.accuracy == pytest.approx(3 / 5)
    assert rep.per_class["a"] == {"accuracy": 0.5, "n": 2}
    assert rep.per_class["b"]["accuracy"] == 1.0
    assert rep.per_class["c"]["accuracy"] == 0.0
    assert rep.confusion["a"] == {"a": 1, "b": 1, "c": 0, "zz": 0}
    assert sum(sum(r.values()) for r in rep.confusion.values()) == 5      # an unknown prediction still counts
    text = format_class_report(rep)
    assert "accuracy  0.6000  (3/5)" in text and "zz" in text
    with pytest.raises(ValueError):
        classification_report(["a"], [])


def test_class_without_examples_is_nan():
    rep = classification_report(["a"], ["a"], labels=["a", "b"])
    assert math.isnan(rep.per_class["b"]["accuracy"])
    assert "n/a" in format_class_report(rep)


def test_learning_curve_reads_engine_records(tmp_path):
    trace = [{"iteration": 0, "dev": 0.5, "elbo": -3.0, "train_acc": 0.4, "tokens": 100},
             {"iteration": 1, "dev": None, "elbo": -2.0, "tokens": 200},
             {"iteration": 2, "dev": 0.75, "elbo": None, "tokens": 300}]
    pts = learning_curve([IterationRecord.from_json(r) for r in trace])
    assert [p.dev_accuracy for p in pts] == [0.5, None, 0.75]
    assert [p.elbo for p in pts] == [-3.0, -2.0, None]
    assert pts[0].train_accuracy == 0.4 and pts[2].tokens == 300
    text = format_learning_curve(pts)
    assert "first 0.500, best 0.750, last 0.750" in text
    assert text.count("\n") == 4
    png = plot_learning_curve(pts, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert format_learning_curve([]) == "no iterations recorded yet"


def test_progress_plain_lines_and_live_bar():
    import io

    from dlc.report.progress import FitProgress

    buf = io.StringIO()
    with FitProgress(4, completed=1, description="net", stream=buf, live=False) as bar:
        bar.update(2, dev_accuracy=0.5, best_dev=0.5, tokens=1234)
        bar.update(3, tokens=2000)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[net] iteration 2/4  dev 0.500 (best 0.500)  tokens 1,234") and "ETA" in lines[0]
    assert "iteration 3/4  dev 0.500" in lines[1] and "tokens 2,000" in lines[1]
    live = io.StringIO()
    with FitProgress(3, stream=live, live=True) as bar:
        bar.update(1, dev_accuracy=0.25, tokens=10)
        bar.update(3, dev_accuracy=0.75, best_dev=0.75, tokens=20)
    out = live.getvalue()
    assert "3/3" in out and "dev 0.750" in out and "tokens 20" in out


def test_learning_curve_png_marks_baseline_kept_prompts_and_test_with_whole_iterations(tmp_path):
    """The PNG's figure: whole-number iteration ticks, the baseline validation as a dashed line, the validations
    whose prompts were kept as stars, test accuracy before/after as markers (issue 17: fractional ticks, no
    baseline, kept-prompt or test markers)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from dlc.report.stats import learning_figure

    trace = [{"iteration": 0, "dev": 0.5, "elbo": -3.0, "baseline": True},
             {"iteration": 1, "dev": 0.6, "elbo": -2.0, "improved": True},
             {"iteration": 2, "dev": 0.55, "elbo": -2.5, "improved": False},
             {"iteration": 3, "dev": 0.7, "elbo": -1.9, "improved": True}]
    pts = learning_curve([IterationRecord.from_json(r) for r in trace])
    assert [p.improved for p in pts] == [None, True, False, True] and pts[0].baseline
    fig = learning_figure(plt, pts, test=(0.48, 0.66))
    ax1, ax2 = fig.axes
    fig.canvas.draw()
    ticks = [t for t in ax2.get_xticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    labels = ax1.get_legend_handles_labels()[1]
    assert labels == ["dev accuracy", "baseline dev 0.500", "new prompts kept", "test before 0.480",
                      "test after 0.660"]
    kept = next(ln for ln in ax1.get_lines() if ln.get_label() == "new prompts kept")
    assert list(kept.get_xdata()) == [1, 3]
    after = next(ln for ln in ax1.get_lines() if ln.get_label().startswith("test after"))
    assert list(after.get_xdata()) == [3] and list(after.get_ydata()) == [0.66]
    plt.close(fig)

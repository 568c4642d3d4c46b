"""bench/RESULTS.md and bench/plots/ from the grid's finished cells (bench/cells/*.json): the accuracy tables (mean
± 95% t-interval over the seeds run; pending cells listed, never invented), what training changed, and the cost of
every cell. `python bench/grid.py report` writes them; bench/grid.py defines and runs the cells.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grid import (BENCH, CELLS, DEEP_TASKS, DLN2_TASKS, FIT, HIDDEN_MAX_TOKENS, LABEL, METHODS, NINE,  # noqa: E402
                  PAPER_GPT3, POSTERIOR_MAX_TOKENS, SEEDS, SHORT, SIZES, Cell, grid, net_text)


def _load_all(cells_dir: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(cells_dir.glob("*.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        if d.get("test_accuracy") is not None:
            out.append(d)
    return out


def summarize(records: Sequence[dict[str, Any]], method: str, task: str, key: str = "test_accuracy") -> Any:
    """mean ± 95% t-interval over the seeds of (method, task); 0-shot's single deterministic cell stands alone."""
    from dlc.report.stats import mean_ci

    vals = [float(r[key]) for r in records if r["method"] == method and r["task"] == task and r.get(key) is not None]
    return mean_ci(vals) if vals else None


def _pct(ci: Any, method: str = "") -> str:
    """3 seeds: mean±95% t half-width, as the paper prints it. 2 seeds: mean [min-max] (a t-interval on 2 points
    spans ±12.7 standard errors, mostly outside 0-100). 1 seed: the value, marked; 0-shot: marked deterministic."""
    if ci is None:
        return "–"
    s = f"{100 * ci.mean:.1f}"
    if method == "0shot" and ci.n == 1:
        return s + " (det.)"
    if ci.n == 2:
        return s + f" [{100 * min(ci.values):.1f}–{100 * max(ci.values):.1f}] (2)"
    if ci.half_width is not None:
        s += f"±{100 * ci.half_width:.1f}"
    return s + (f" ({ci.n})" if ci.n != 3 else "")


def majority(records: Sequence[dict[str, Any]], task: str) -> float | None:
    """Accuracy of always answering the test set's most frequent label (from any cell's test confusion matrix)."""
    for r in records:
        conf = r.get("test_confusion")
        if r["task"] == task and conf:
            counts = [sum(row.values()) for row in conf.values()]
            return max(counts) / sum(counts) if sum(counts) else None
    return None


def _table(records: Sequence[dict[str, Any]], methods: Sequence[str], tasks: Sequence[str],
           paper: Sequence[str] = ()) -> list[str]:
    lines = ["| Method | " + " | ".join(SHORT[t] for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    maj = [majority(records, t) for t in tasks]
    if any(x is not None for x in maj):
        lines.append("| majority label (test split) | " +
                     " | ".join("–" if x is None else f"{100 * x:.1f}" for x in maj) + " |")
    for m in methods:
        lines.append(f"| {LABEL[m]} (Qwen2.5-Coder-1.5B) | " +
                     " | ".join(_pct(summarize(records, m, t), m) for t in tasks) + " |")
    for m in paper:
        lines.append(f"| *{LABEL[m]} (paper, GPT-3)* | " +
                     " | ".join(f"*{PAPER_GPT3[m].get(t, '–')}*" for t in tasks) + " |")
    return lines


def _k(x: Any) -> str:
    if x is None:
        return "–"
    x = float(x)
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _learning_summary(records: Sequence[dict[str, Any]]) -> list[str]:
    """Per trained method: how often training changed the prompt at all, and what the change did to dev and test
    (paired: the same examples before and after)."""
    from dlc.report.stats import mean_ci

    out = []
    for m in ("dln1", "dln2", "deep3", "branched"):
        rs = [r for r in records if r["method"] == m and learned(r) is not None]
        if not rs:
            continue
        ch = [r for r in rs if learned(r)]
        if not ch:
            out.append(f"- {LABEL[m]}: the prompts never changed in its {len(rs)} cell(s): no update beat the initial "
                       "prompts on dev, so the test accuracy is the starting one.")
            continue
        dt = [100 * (r["test_accuracy"] - r["baseline"]["test_accuracy"]) for r in ch]
        dd = [100 * (r["dev_accuracy"] - r["baseline"]["dev_accuracy"]) for r in ch
              if r["baseline"].get("dev_accuracy") is not None]
        ci = mean_ci(dt)
        out.append(f"- {LABEL[m]}: the prompts changed in {len(ch)} of {len(rs)} cells"
                   + (f"; in those, dev moved {min(dd):+.1f}…{max(dd):+.1f} points (mean {sum(dd) / len(dd):+.1f})"
                      if dd else "")
                   + f" and test {min(dt):+.1f}…{max(dt):+.1f} (mean {ci.mean:+.1f}"
                   + (f" ± {ci.half_width:.1f}" if ci.half_width is not None else "") + "). In the other "
                   f"{len(rs) - len(ch)} no update beat the initial prompts on dev: their test accuracy is the "
                   "starting one.")
    return out


def paired_vs_start(records: Sequence[dict[str, Any]], method: str, task: str) -> tuple[Any, int] | None:
    """What training did on the test examples themselves: for each test example, (final correct - initial correct)
    averaged over the seeds run, then mean ± 95% t-interval over the examples (points), and the number of seeds.
    Paired: the same examples before and after, so the example-to-example noise of a 40-example split cancels.
    None when no cell of (method, task) kept its per-example predictions."""
    from dlc.report.stats import mean_ci

    per: dict[str, list[float]] = {}
    seeds = 0
    for r in records:
        tp = r.get("test_predictions") or {}
        if r["method"] != method or r["task"] != task or not tp.get("final") or not tp.get("baseline"):
            continue
        seeds += 1
        for i, t, a, b in zip(tp["ids"], tp["targets"], tp["final"], tp["baseline"]):
            per.setdefault(i, []).append(100.0 * ((a == t) - (b == t)))
    if not per:
        return None
    return mean_ci([sum(v) / len(v) for v in per.values()]), seeds


def _paired_table(records: Sequence[dict[str, Any]], methods: Sequence[str], tasks: Sequence[str]) -> list[str]:
    """Rows: trained methods; columns: tasks; cells: paired change against the method's own starting prompts."""
    rows = []
    for m in methods:
        cells = []
        for t in tasks:
            p = paired_vs_start(records, m, t)
            if p is None:
                cells.append("–")
                continue
            ci, seeds = p
            hw = ci.half_width if ci.half_width is not None else 0.0
            text = f"{ci.mean:+.1f} ± {hw:.1f} ({seeds})"
            cells.append(f"**{text}**" if abs(ci.mean) > hw else text)
        if any(c != "–" for c in cells):
            rows.append(f"| {LABEL[m]} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["Paired change against the method's own starting prompts on the same test examples (points): for each "
            "example, (trained correct − initial correct) averaged over the seeds run (in brackets), mean ± 95% "
            "t-interval over the examples; **bold**: the interval excludes 0.", "",
            "| Method | " + " | ".join(SHORT[t] for t in tasks) + " |",
            "|---|" + "---|" * len(tasks), *rows, ""]


def learned(r: dict[str, Any]) -> bool | None:
    """Did training end on prompts other than the initial ones? (None for cells that do not train.)"""
    if r["method"] in ("0shot", "5shot"):
        return None
    if r["method"] == "dspy-copro":
        initial = (r.get("settings") or {}).get("initial_instruction")
        return None if initial is None else ((r.get("prompts") or {}).get("y") != initial
                                             or bool(r.get("prompt_prefix")))
    before = (r.get("baseline") or {}).get("prompts")
    return None if before is None else r.get("prompts") != before


def _fit_seconds(c: dict[str, Any]) -> Any:
    """dlc: training + final evaluation; DSPy: optimisation + both evaluations (the same span)."""
    if c.get("fit_seconds") is not None:
        return c["fit_seconds"]
    if c.get("optimize_seconds") is not None:
        return float(c["optimize_seconds"]) + float(c.get("eval_seconds") or 0.0)
    return None


def _threads(r: dict[str, Any]) -> str:
    """llama.cpp threads of a cell: recorded by the grid, or the DSPy run's server setting; `?` before either."""
    settings = r.get("settings") if isinstance(r.get("settings"), dict) else {}
    return str(r.get("threads") or settings.get("dlc_threads") or "?")


def cost_table(records: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| cell | dev | test (before) | learned | calls | prompt tok | compl. tok | cache hits | decoded tok | "
             "minimum tok | thr | fit s | wall s | outside backend | outside decode |", "|---" * 15 + "|"]
    order = {m: i for i, m in enumerate(METHODS + ("dspy-copro",))}
    for r in sorted(records, key=lambda r: (order.get(r["method"], 99), r["task"], r["seed"])):
        c = r.get("cost") or {}
        base = (r.get("baseline") or {}).get("test_accuracy")
        ov, ovd = c.get("overhead"), c.get("overhead_decode")
        lr = learned(r)
        lines.append("| " + " | ".join([
            r["cell"], f"{r['dev_accuracy']:.3f}" if r.get("dev_accuracy") is not None else "–",
            f"{r['test_accuracy']:.3f}" + (f" ({base:.3f})" if base is not None else ""),
            "–" if lr is None else ("yes" if lr else "no"),
            _k(c.get("calls")), _k(c.get("prompt_tokens")), _k(c.get("completion_tokens")), _k(c.get("cache_hits")),
            _k(c.get("decoded_tokens")), _k(c.get("unique_tokens")), _threads(r),
            _k(_fit_seconds(c)), _k(c.get("wall_seconds")),
            f"{100 * ov:.0f}%" if ov is not None else "–", f"{100 * ovd:.0f}%" if ovd is not None else "–"]) + " |")
    return lines


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """A plot's legend and layout, written as a 100-dpi PNG and closed."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plots(records: Sequence[dict[str, Any]], plots_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    methods = [m for m in ("0shot", "5shot", "dln1", "dln2", "deep3", "branched", "dspy-copro")
               if any(r["method"] == m for r in records)]
    tasks = [t for t in NINE if any(r["task"] == t for r in records)]
    if methods and tasks:
        fig, ax = plt.subplots(figsize=(11, 4))
        w = 0.8 / len(methods)
        for i, m in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for j, t in enumerate(tasks):
                ci = summarize(records, m, t)
                if ci is not None:
                    mean, hw = 100 * ci.mean, 100 * (ci.half_width or 0.0)
                    xs.append(j + i * w)
                    ys.append(mean)
                    lo.append(min(hw, mean))            # an accuracy interval ends at 0 and 100
                    hi.append(min(hw, 100 - mean))
            ax.bar(xs, ys, w, yerr=[lo, hi], capsize=2, label=LABEL[m])
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(tasks))], [SHORT[t] for t in tasks])
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title("Qwen2.5-Coder-1.5B (embedded), mean ± 95% CI over the seeds run (clipped to 0-100)")
        written.append(_save(fig, ax, plots_dir / "accuracy.png"))
    zero = {r["task"]: r["test_accuracy"] for r in records if r["method"] == "0shot"}

    def start(r: dict[str, Any]) -> float | None:     # each optimizer against its own unoptimised program
        return (r.get("baseline") or {}).get("test_accuracy") if r["method"] == "dspy-copro" else zero.get(r["task"])

    pts = [r for r in records if r["method"] != "0shot" and start(r) is not None
           and _fit_seconds(r.get("cost") or {})]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in [m for m in LABEL if any(r["method"] == m for r in pts)]:
            rs = [r for r in pts if r["method"] == m]
            ax.scatter([float(_fit_seconds(r["cost"])) / 60 for r in rs],
                       [100 * (r["test_accuracy"] - float(start(r))) for r in rs], label=LABEL[m])  # type: ignore[arg-type]
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("minutes (training + evaluation, 2-core CPU, after the shared cache)")
        ax.set_ylabel("test accuracy gain over its own 0-shot (points)")
        ax.set_title("one point per cell (40 test examples: ±15 points per run)", fontsize=9)
        written.append(_save(fig, ax, plots_dir / "cost.png"))
    return written


def report(cells_dir: Path = CELLS, results: Path = BENCH / "RESULTS.md", plots_dir: Path = BENCH / "plots",
           notes: Path = BENCH / "NOTES.md") -> str:
    """Regenerate RESULTS.md (and the plots) from the finished cells; pending cells are listed, never invented."""
    records = _load_all(cells_dir)
    done = {r["cell"] for r in records}
    pending = [c.id for c in grid() if c.id not in done]
    # 0-shot is one deterministic cell per task: report it under every seed's table row as-is
    lines = ["# Benchmark results (generated by `python bench/grid.py report`; do not edit)", ""]
    learning = results.parent / "LEARNING.md"
    if learning.is_file():
        # issue 14's measurement (bench/learning.py, 100 test examples, the defaults of dlc since then) comes first;
        # the grid below it is the earlier one (40 test examples, the paper's selection, no calibration)
        text14 = learning.read_text(encoding="utf-8").rstrip().replace("# Learning on the default model",
                                                                        "## Learning on the default model", 1)
        lines += [text14, ""]
        t250 = results.parent / "LEARNING_T250.md"        # the same cells re-evaluated on 250 test examples
        if t250.is_file():
            lines += [t250.read_text(encoding="utf-8").rstrip().replace("# Learning", "## Learning", 1), ""]
        lines += ["# The earlier grid (issue 6)", ""]
    if notes.is_file():
        lines += [notes.read_text(encoding="utf-8").rstrip(), ""]
    lines += ["## Settings", "",
              f"- Model: embedded `default`, Qwen2.5-Coder-1.5B-Instruct Q4_K_M (llama.cpp, 2 CPU cores), forward and "
              "backward.",
              f"- Splits (every task, every dlc method): the reference splits (shared/data/README.md) cut to train "
              f"{SIZES['train']}, dev {SIZES['dev']}, test {SIZES['test']} (dlc `data` block sizes; dev and test are "
              "the same examples for every seed, the seed draws the training sample, batches and proposals). DSPy: "
              "the first 24 of the same train examples, the same dev and test.",
              "- Settings were fixed before any grid cell ran, from the quickstart's dev-set runs and the CPU budget; "
              "no setting was chosen by looking at a test number.",
              "- Threads: cells with `thr` 2 ran alone with 2 llama.cpp threads (`--threads`). Cells with `?` ran "
              "before the thread count was pinned: dlc's default picks threads from the load average, so they ran "
              "on 1 or 2 threads, and the seed-42 cells shared the machine with the DSPy runs (about 10:44-11:51). "
              "Compare their times loosely.",
              *[f"- `{m}`: `fit {{ {FIT[m]} }}`" for m in METHODS],
              f"- Hidden layers: `max_tokens = {HIDDEN_MAX_TOKENS}`; DLN-2 posterior mixture prior_answer 0.5 / prior "
              f"0.5 (deep3: prior_answer / edit); posterior samples up to {POSTERIOR_MAX_TOKENS} tokens (`backward "
              f"{{ posterior_max_tokens = {POSTERIOR_MAX_TOKENS} }}`: the cap when the grid began, kept for every "
              "seed; dlc's default is now the layer's own max_tokens).",
              f"- Seeds {', '.join(map(str, SEEDS))}; 0-shot is deterministic (greedy, seed-free splits): one cell "
              "per task.",
              "- Numbers are test accuracy in %: over 3 seeds mean ± 95% t-interval half-width; over 2 seeds mean "
              "[min–max] (2); one seed: the value (1); 0-shot: one deterministic cell (det.). With 40 test examples "
              "one run alone carries about ±15 points. `majority label`: always answering the test split's most "
              "frequent label.",
              ""]
    lines += ["## 1. DLN-1 vs 0-shot vs 5-shot (nine paper tasks)", ""]
    lines += _table(records, ("0shot", "5shot", "dln1"), NINE, paper=("0shot", "5shot", "dln1")) + [""]
    lines += _learning_summary(records) + [""]
    lines += ["## 2. DLN-2 vs DLN-1", ""]
    lines += _table(records, ("0shot", "dln1", "dln2"), DLN2_TASKS, paper=("dln1", "dln2")) + [""]
    lines += _paired_table(records, ("dln1", "dln2"), DLN2_TASKS)
    lines += ["## 3. deep3 and branched", ""]
    lines += _table(records, ("dln1", "dln2", "deep3", "branched"), DEEP_TASKS) + [""]
    lines += _paired_table(records, ("deep3", "branched"), DEEP_TASKS)
    dspy = [r for r in records if r["method"] == "dspy-copro"]
    lines += ["## 4. Peer baseline: DSPy COPRO through `dlc serve`", ""]
    if dspy:
        tasks = [t for t in NINE if any(r["task"] == t for r in dspy)]
        lines += _table(records, ("0shot", "dln1", "dspy-copro"), tasks)
        lines += ["| DSPy program before COPRO (Qwen2.5-Coder-1.5B) | " + " | ".join(
            _pct(summarize([{"method": "x", "task": r["task"], "test_accuracy": r["baseline"]["test_accuracy"]}
                            for r in dspy], "x", t)) for t in tasks) + " |", ""]
        lines += ["DSPy generates an answer and parses it (ChatAdapter); dlc scores each label's log-probability. "
                  "So the two start from different 0-shot accuracies with the same model and instruction: compare "
                  "each optimizer with its own starting row. DSPy's train set is the first 24 of the grid's 40 "
                  "(dev and test are the grid's).", ""]
        for r in dspy:
            lines.append(f"- `{r['cell']}`: settings {json.dumps(r.get('settings'), sort_keys=True)}")
        lines.append("")
    else:
        lines += ["No DSPy cell has finished yet (`python bench/dspy_baseline.py`).", ""]
    lines += ["## Cost of every cell", "",
              "calls / tokens: requests that reached the backend (after the cache); decoded: tokens llama.cpp really "
              "evaluated; minimum: distinct token prefixes of those requests (what perfect prefix sharing would "
              "decode); fit s: training + final evaluation wall time; overhead: fraction of it not spent inside the "
              "backend.", ""]
    lines += cost_table(records) + [""]
    if pending:
        lines += [f"## Pending cells ({len(pending)} of {len(grid())})", "",
                  "Not run yet (`python bench/grid.py run` continues with them): " + ", ".join(pending), "",
                  "The DSPy baseline is not part of `grid.py run` (it needs `pip install dspy` and a `dlc serve`): "
                  "it ran on trec and subj with seed 42 only (`bench/dspy_baseline.py`, 30-37 min per cell).", ""]
    lines += ["## The networks", "",
              "Each cell fits a generated `.dln` (`bench/out/nets/<cell>.dln`); here are the subj ones (other tasks "
              "differ only in the task, the instruction and the labels).", ""]
    for m in ("dln1", "dln2", "deep3", "branched"):
        lines += [f"<details><summary>{LABEL[m]}</summary>", "", "```", net_text(Cell(m, "subj", 42)).rstrip(),
                  "```", "", "</details>", ""]
    text = "\n".join(lines)
    from dlc.fsutil import atomic_write_text

    atomic_write_text(results, text)
    if records:
        plots(records, plots_dir)
    return text

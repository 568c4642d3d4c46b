"""Issue 15, candidate racing: replay recorded traces and ask, for every prompt update, whether successive halving
would have picked the prompt exhaustive scoring picked, and what share of the scoring it would have cost.

    python bench/racing.py replay TRACE.jsonl|RUN_DIR ... [--write]   # the table; --write: bench/RACING.md
    python bench/racing.py rerun CELL ... --data-dir D [--write]      # issue-14 cells rerun from the cache, replayed

A trace written since issue 15 records, for every layer update, `example_rewards` r_ni: candidate n's reward terms
on batch example i (reward_n is their mean). Racing is simulated on that matrix with the engine's own schedule
(`dlc.engine.prompts.race_schedule`): each round ranks the live candidates by their mean over the first m examples,
keeps the better half (the incumbent, candidate 0, always stays), and the survivors meet on the whole batch.
Cost = Σ_n examples candidate n was scored on / (N·B): scoring tokens are proportional to it (every example is
scored under every candidate with the same label set). Approximation: a calibrated layer refits its offsets on the
examples of each round when it really races; the replay uses the offsets fitted on the whole batch.

The same updates also measure other rules (`RULES`: one later or gentler cut, a paired statistical cut, exhaustive
scoring on part of the batch) and, by resampling each batch, how stable the exhaustive pick is in the first place.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from dlc.engine.prompts import race_schedule  # noqa: E402


def simulate(rewards: Sequence[Sequence[float]]) -> tuple[int, list[int]]:
    """(chosen index, examples scored per candidate) of successive halving on a reward matrix r[n][i]."""
    n_cand, B = len(rewards), len(rewards[0])
    if n_cand <= 2:
        full = [sum(r) / B for r in rewards]
        return max(range(n_cand), key=lambda n: (full[n], -n)), [B] * n_cand
    alive = list(range(n_cand))
    scored = [0] * n_cand
    sched = race_schedule(n_cand, B)
    k = 0
    while True:
        m = sched[k]
        mean = {n: sum(rewards[n][:m]) / m for n in alive}
        for n in alive:
            scored[n] = m
        if m >= B:
            return max(alive, key=lambda n: (mean[n], -n)), scored
        if len(alive) > 2:
            order = sorted(alive, key=lambda n: (-mean[n], n))
            alive = sorted(set(order[:math.ceil(len(alive) / 2)]) | {0})
        k = k + 1 if len(alive) > 2 else len(sched) - 1


def halving(rewards: Sequence[Sequence[float]], first: int, keep: float) -> tuple[int, list[int]]:
    """One elimination round on the first `first` examples keeping the best ⌈keep·n⌉ (at least 2, the incumbent
    always), then the survivors on the whole batch: the engine's schedule with a later, gentler cut."""
    n_cand, B = len(rewards), len(rewards[0])
    m = min(first, B)
    mean = [sum(r[:m]) / m for r in rewards]
    order = sorted(range(n_cand), key=lambda n: (-mean[n], n))
    alive = sorted(set(order[:max(2, math.ceil(n_cand * keep))]) | {0})
    scored = [B if n in alive else m for n in range(n_cand)]
    return max(alive, key=lambda n: (sum(rewards[n]), -n)), scored


def paired_elimination(rewards: Sequence[Sequence[float]], first: int, z: float) -> tuple[int, list[int]]:
    """Racing with a statistical cut (F-race style): after the first `first` examples, drop only the candidates
    whose paired difference from the leader is below −z standard errors; the rest meet on the whole batch."""
    n_cand, B = len(rewards), len(rewards[0])
    m = min(first, B)
    lead = max(range(n_cand), key=lambda n: (sum(rewards[n][:m]), -n))
    alive = []
    for n in range(n_cand):
        d = [rewards[n][i] - rewards[lead][i] for i in range(m)]
        mean = sum(d) / m
        se = math.sqrt(sum((x - mean) ** 2 for x in d) / max(1, m - 1) / m)
        if n in (0, lead) or mean > -z * se:
            alive.append(n)
    scored = [B if n in alive else m for n in range(n_cand)]
    return max(alive, key=lambda n: (sum(rewards[n]), -n)), scored


def prefix(rewards: Sequence[Sequence[float]], m: int) -> tuple[int, list[int]]:
    """Exhaustive scoring on the first m examples only: every candidate costs m."""
    m = min(m, len(rewards[0]))
    return max(range(len(rewards)), key=lambda n: (sum(rewards[n][:m]), -n)), [m] * len(rewards)


def self_agreement(rewards: Sequence[Sequence[float]], draws: int = 1000, seed: int = 0) -> float:
    """How often exhaustive scoring on B examples drawn with replacement from the batch picks the candidate it picks
    on the batch itself (bootstrap): how much of the exhaustive pick is the draw of the batch rather than the
    candidates. Seeded, so a replay is reproducible."""
    n_cand, B = len(rewards), len(rewards[0])
    best = max(range(n_cand), key=lambda n: (sum(rewards[n]), -n))
    rng = random.Random(seed)
    same = 0
    for _ in range(draws):
        idx = [rng.randrange(B) for _ in range(B)]
        same += max(range(n_cand), key=lambda n: (sum(rewards[n][i] for i in idx), -n)) == best
    return same / draws


RULES: list[tuple[str, Callable[[Sequence[Sequence[float]]], tuple[int, list[int]]]]] = [
    ("successive halving (the engine's `fit.racing = halving`)", simulate),
    *[(f"one cut at {m} examples, keep {name}", (lambda r, m=m, k=k: halving(r, m, k)))
      for m in (2, 4, 6) for name, k in (("1/2", 0.5), ("2/3", 2 / 3))],
    *[(f"paired cut at {m} examples, z = {z}", (lambda r, m=m, z=z: paired_elimination(r, m, z)))
      for m in (2, 4, 6) for z in (1.0, 2.0)],
    *[(f"exhaustive on the first {m} examples", (lambda r, m=m: prefix(r, m))) for m in (2, 4, 6)],
]


def agrees(update: dict[str, Any], chosen: int) -> bool:
    """Whether picking candidate `chosen` keeps the prompt exhaustive scoring kept (a duplicate text counts)."""
    return chosen == update["chosen_index"] or update["candidates"][chosen] == update["chosen"]


def frontier(ups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Agreement with the exhaustive pick and scoring cost of every rule in RULES over the same updates: whether
    any way of scoring on part of the batch reaches the issue's 90% at half the tokens."""
    out = []
    for name, rule in RULES:
        agree, spent, total = 0, 0, 0
        for u in ups:
            r = u["example_rewards"]
            chosen, scored = rule(r)
            agree += agrees(u, chosen)
            spent, total = spent + sum(scored), total + len(r) * len(r[0])
        out.append({"rule": name, "agree": agree / max(1, len(ups)), "cost": spent / max(1, total)})
    return out


def updates(path: Path) -> list[dict[str, Any]]:
    trace = path / "trace.jsonl" if path.is_dir() else path
    out = []
    for line in trace.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        for node, ups in (rec.get("layers") or {}).items():
            for u in (ups if isinstance(ups, list) else [ups]):
                if u.get("example_rewards"):
                    out.append(dict(u, source=path.name, iteration=rec.get("iteration")))
    return out


def paired_gap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of a_i - b_i over the batch and the half-width of its 95% interval (normal approximation): how much
    better, on this batch, the exhaustive pick was than racing's."""
    d = [x - y for x, y in zip(a, b)]
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / max(1, len(d) - 1))
    return m, 1.96 * sd / math.sqrt(len(d))


def fit_level(runs: Sequence[Path]) -> list[str]:
    """Exhaustive runs (bench/out/racing/<cell>) against the same cell fitted with `fit.racing = halving`
    (bench/out/racing-halving/<cell>, when present): requests of the whole fit and whether the prompts agree."""
    lines = []
    for run in runs:
        other = BENCH / "out" / "racing-halving" / run.name / "result.json"
        if not other.is_file():
            continue
        a, b = json.loads((run / "result.json").read_text()), json.loads(other.read_text())
        ra = a["usage"]["calls"] + a["usage"]["cache_hits"]
        rb = b["usage"]["calls"] + b["usage"]["cache_hits"]
        lines.append(f"| {run.name} | {ra:,} | {rb:,} | {100 * (ra - rb) / ra:.1f}% | "
                     f"{'yes' if a['prompts'] == b['prompts'] else 'no'} |")
    if not lines:
        return []
    return ["", "Whole fits (every request of the fit: training, validations, final dev/test evaluations), the "
            "recorded cell against the same cell with `fit.racing = halving` (`dlc fit ... --set "
            "fit.racing=halving`):", "",
            "| cell | requests, exhaustive | requests, racing | saved | same learned prompts |",
            "|---|---|---|---|---|", *lines]


def replay(paths: Sequence[Path]) -> dict[str, Any]:
    rows, ups = [], []
    for p in paths:
        for u in updates(p):
            ups.append(u)
            r = u["example_rewards"]
            chosen, scored = simulate(r)
            exhaustive = u["chosen_index"]
            same = agrees(u, chosen)
            rows.append({"source": u["source"], "node": u["node"], "iteration": u["iteration"], "N": len(r),
                         "B": len(r[0]), "same": same, "changed": exhaustive != 0,
                         "cost": sum(scored) / (len(r) * len(r[0])),
                         "gap": None if same else paired_gap(r[exhaustive], r[chosen]),
                         "self": self_agreement(r)})
    return {"rows": rows, "updates": len(rows), "agree": sum(x["same"] for x in rows), "frontier": frontier(ups),
            "self": sum(x["self"] for x in rows) / max(1, len(rows)),
            "cost": (sum(x["cost"] * x["N"] * x["B"] for x in rows) / max(1, sum(x["N"] * x["B"] for x in rows)))}


def rerun(cells: Sequence[str], data_dir: str) -> list[Path]:
    """Rerun recorded issue-14 cells (bench/out/nets14/<cell>.dln) against the shared LLM cache with this tree's
    code, which records `example_rewards`: the same requests, so every answer comes from the cache and the fit is the
    recorded one. Returns the run directories (bench/out/racing/<cell>)."""
    import subprocess

    out = []
    for cid in cells:
        net = BENCH / "out" / "nets14" / f"{cid}.dln"
        run = BENCH / "out" / "racing" / cid
        if not (run / "result.json").is_file():
            if run.exists():
                import shutil

                shutil.rmtree(run)
            run.parent.mkdir(parents=True, exist_ok=True)
            rc = subprocess.call([sys.executable, "-m", "dlc", "fit", str(net), "--run-dir", str(run),
                                  "--data-dir", data_dir, "--cache-dir", str(BENCH / "out" / "cache"),
                                  "--no-progress"], cwd=BENCH.parent, stdout=subprocess.DEVNULL)
            if rc != 0:
                print(f"{cid}: rerun failed (exit {rc})", file=sys.stderr)
                continue
        res = json.loads((run / "result.json").read_text())
        print(f"{cid}: {res['usage']['cache_hits']} cache hits, {res['usage']['calls']} calls to the model",
              flush=True)
        out.append(run)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=("replay", "rerun"))
    ap.add_argument("paths", nargs="+", type=Path, help="traces/run dirs (replay) or issue-14 cell ids (rerun)")
    ap.add_argument("--write", action="store_true", help="write bench/RACING.md")
    ap.add_argument("--data-dir", default="")
    a = ap.parse_args(argv)
    paths = rerun([str(p) for p in a.paths], a.data_dir) if a.cmd == "rerun" else a.paths
    res = replay(paths)
    if not res["updates"]:
        print("error: no prompt update with per-example rewards in these traces (traces written before issue 15 "
              "do not record them: `rerun` the cell with this tree first); bench/RACING.md is left as it is",
              file=sys.stderr)
        return 1
    lines = ["| trace | node | iteration | N | B | racing picks the same | exhaustive changed the prompt | cost | "
             "exhaustive − racing pick, mean reward ± 95% | exhaustive picks it again on resampled batches |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in res["rows"]:
        gap = f"{x['gap'][0]:+.3f} ± {x['gap'][1]:.3f}" if x["gap"] else ""
        lines.append(f"| {x['source']} | {x['node']} | {x['iteration']} | {x['N']} | {x['B']} | "
                     f"{'yes' if x['same'] else '**no**'} | {'yes' if x['changed'] else 'no'} | {x['cost']:.2f} | "
                     f"{gap} | {100 * x['self']:.0f}% |")
    lines += fit_level([p for p in paths if p.is_dir()])
    differ = [x for x in res["rows"] if not x["same"]]
    worse = sum(x["gap"][0] - x["gap"][1] > 0 for x in differ)      # a pick that differs always has its gap
    summary = (f"{res['agree']}/{res['updates']} updates pick the same prompt "
               f"({100 * res['agree'] / res['updates']:.0f}%); "
               f"scoring cost {res['cost']:.2f} of exhaustive ({1 / max(res['cost'], 1e-9):.2f}× fewer scoring "
               f"tokens); where they differ, racing's pick is significantly worse on the batch in {worse} of "
               f"{len(differ)} updates (95% interval of the reward gap above 0)")
    summary += (f". On batches of the same size resampled from each update's batch, exhaustive scoring picks its own "
                f"choice again in {100 * res['self']:.0f}% of draws (mean over the updates)")
    table = ["", "## Other ways of scoring on part of the batch, on the same updates", "",
             "| rule | agrees with exhaustive | scoring cost | fewer scoring tokens |", "|---|---|---|---|",
             *[f"| {f['rule']} | {100 * f['agree']:.0f}% | {f['cost']:.2f} | {1 / max(f['cost'], 1e-9):.2f}× |"
               for f in res["frontier"]]]
    print("\n".join(lines + table + ["", summary]))
    if a.write:
        head = ["# Candidate racing replayed on recorded traces (issue 15)", "",
                "Generated by `python bench/racing.py replay … --write`. "
                + " ".join((__doc__ or "").split("\n\n")[2:]).replace("\n", " ").strip(), "", "**" + summary + "**", ""]
        (BENCH / "RACING.md").write_text("\n".join(head + table[1:] + [""] + lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

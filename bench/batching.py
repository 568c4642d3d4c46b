"""Issue 15's speed measurements, on an idle machine only (threads and load average are written beside every number).

    python bench/batching.py curve [--models tiny,small,default]   # llama.cpp step cost vs rows decoded together
    python bench/batching.py cell --before DIR [--data-dir D]      # a DLN-2 cell: code in DIR (before) vs this tree
    python bench/batching.py cell --only after --label shapes      # this tree's run alone, saved as cell-shapes
    python bench/batching.py cell --only after --label cap --posterior-max-tokens 0   # samples at the layer's cap
    python bench/batching.py report                           # bench/BATCHING.md from bench/batching_records/*.json

`curve`: the model loaded as dlc loads it (EmbeddedLM, 2 threads), one ~100-token prompt in sequence 0, copied into
n sequences; a step decodes one token in each of them (one llama_decode of n rows). 3 warm-up steps, then the mean
of 12. Also llama.cpp's prompt-eval throughput on one 256-token chunk: the two limits a fit can reach.
`cell`: the bench grid's DLN-2 navigate cell (bench/grid.py settings) with `iters = 1`, run as `dlc fit` in a fresh
cache directory, once with the code in --before (a git worktree of the commit before batching) and once with this
tree; wall time, completion tokens and, for this tree, the backend's seconds and tokens per phase.
Records go to bench/batching_records/ (in git: BATCHING.md must be reproducible from what the repository holds; the
first records lived in bench/out and were lost with the machine they were taken on). Traces stay in bench/out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "batching_records"           # records (JSON, in git)
TRACES = BENCH / "out" / "batching"         # the cells' traces (large; bench/racing.py replays them)
ROWS = (1, 2, 4, 8, 16, 32)
CELLS = BENCH / "cells"                     # grid cell records: those with decode shapes get the limit by shape
SCORING = BENCH / "scoring_records"        # chunks-default*.json: prompt evaluation vs rows (bench/scoring.py chunks)


def _cpu() -> str:
    """The CPU model and its widest vector extension: batched decoding and prompt evaluation ran at half the rate on
    an AVX2 machine as on the earlier one at the same thread count (bench/README.md), so a throughput means little
    without the machine it was taken on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    return f"{name}, " + ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2")


def _machine() -> dict[str, Any]:
    return {"threads": int(os.environ.get("DLC_THREADS", "2")), "load_avg_1m": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": _cpu()}


def curve(model: str, threads: int, context: int = 0) -> dict[str, Any]:
    """Step cost vs rows. `context` > 0: the rows' shared prompt is that many tokens (a posterior prompt is ~700-1,000
    tokens), so the step also pays attention over a long KV."""
    from dlc.lm.base import ChatPrompt
    from dlc.lm.embedded import EmbeddedLM

    before = _machine()
    lm = EmbeddedLM(model, n_ctx=max(1024, context + 64), n_seq_max=max(ROWS) + 1, n_threads=threads)
    text = ("Think step by step about the following question and explain your reasoning in detail before giving "
            "the answer. ")
    prompt = lm._prompt_tokens(ChatPrompt(text * 4))
    while context and len(prompt) < context:
        prompt = lm._prompt_tokens(ChatPrompt(text * (4 + len(prompt) // 4)))
    if context:
        prompt = prompt[:context]
    n0 = len(prompt)
    last = lm._load_prefix(prompt)
    tok = int(last.argmax())
    rows: dict[int, float] = {}
    for n in ROWS:
        seqs = list(range(1, n + 1))
        for s in seqs:
            lm._L.llama_memory_seq_cp(lm._mem, 0, s, -1, -1)
        times = []
        for step in range(15):
            items = [(tok, n0 + step, s) for s in seqs]
            t0 = time.perf_counter()
            lm._decode(items, {k: None for k in range(len(items))})
            if step >= 3:
                times.append(time.perf_counter() - t0)
        lm._clear_seqs(seqs)
        rows[n] = sum(times) / len(times)
    # prompt eval: one 256-token chunk in a fresh sequence (the best llama.cpp does for a long prompt)
    chunk = (prompt * 4)[:256]
    pe = []
    for _ in range(3):
        lm._clear_seqs([1])
        t0 = time.perf_counter()
        lm._decode([(t, i, 1) for i, t in enumerate(chunk)], {255: None})
        pe.append(time.perf_counter() - t0)
    lm._clear_seqs([1])
    lm.close()
    after = _machine()
    return {"model": model, "threads": threads, "prompt_tokens": n0, "load_before": before["load_avg_1m"],
            "load_after": after["load_avg_1m"], "time": before["time"], "cpu": before["cpu"],
            "step_ms": {str(n): round(v * 1000, 1) for n, v in rows.items()},
            "tok_per_s": {str(n): round(n / v, 1) for n, v in rows.items()},
            "prompt_eval_tok_per_s": round(256 / min(pe), 1)}


NET = """# bench/batching.py: the grid's DLN-2 navigate cell with iters = 1
network dln2
input x

layer h(x) {
  template = step_by_step
  prompt = ""
  max_tokens = 64
  backward { posterior = { prior_answer: 0.5, prior: 0.5 }  posterior_max_tokens = 512 }
}

OUTPUT

output y { target = label  metric = accuracy }

data { task = "navigate"  train_size = 40  dev_size = 20  test_size = 40 }
fit  { iters = 1  batch_size = 8  num_p_samples = 4  num_h_samples = 3  val_freq = 1  tolerance = 2  use_memory = 2
       seed = 42 }
"""


def cell(code_dir: Path, label: str, data_dir: str, threads: int, posterior_max_tokens: int = 512) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    from grid import _output_layer

    work = Path(tempfile.mkdtemp(prefix=f"dlc-batching-{label}-"))
    net = work / "dln2.dln"
    output = _output_layer("navigate", "x, h", "residual", calibration=None)     # dlc's defaults, as measured
    text = NET.replace("OUTPUT", output)
    if "posterior_max_tokens" in (code_dir / "dlc" / "ir.py").read_text(encoding="utf-8"):
        text = text.replace("posterior_max_tokens = 512", f"posterior_max_tokens = {posterior_max_tokens}")
    elif posterior_max_tokens == 512:
        text = text.replace("  posterior_max_tokens = 512", "")   # older code: samples were capped at 512 anyway
    else:
        raise SystemExit(f"error: the code in {code_dir} has no posterior_max_tokens (its samples ran to 512)")
    net.write_text(text, encoding="utf-8")
    run = work / "run"
    env = dict(os.environ, DLC_THREADS=str(threads))
    before = _machine()
    t0 = time.perf_counter()
    rc = subprocess.call([sys.executable, "-m", "dlc", "fit", str(net), "--run-dir", str(run), "--data-dir", data_dir,
                          "--cache-dir", str(work / "cache"), "--no-progress"], cwd=code_dir, env=env,
                         stdout=subprocess.DEVNULL, stderr=open(work / "stderr", "w"))
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{label}: dlc fit failed (exit {rc}); see {work / 'stderr'}")
    res = json.loads((run / "result.json").read_text())
    usage = res["usage"]
    commit = subprocess.run(["git", "-C", str(code_dir), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = {"label": label, "code": str(code_dir), "commit": commit, "wall_seconds": round(wall, 1), "threads": threads,
           "load_before": before["load_avg_1m"], "load_after": _machine()["load_avg_1m"], "time": before["time"],
           "cpu": before["cpu"],
           "completion_tokens": usage["completion_tokens"], "prompt_tokens": usage["prompt_tokens"],
           "calls": usage["calls"], "backend": usage.get("backend"),
           "dev": [res["baseline"]["dev_accuracy"], res["dev_accuracy"]],
           "test": [res["baseline"]["test_accuracy"], res["test_accuracy"]], "prompts": res["prompts"]}
    TRACES.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "trace.jsonl", TRACES / f"cell-{label}-trace.jsonl")   # bench/racing.py replays it
    shutil.rmtree(work, ignore_errors=True)
    return out


def limit_table(phases: dict[str, Any], curve: dict[str, Any], long: dict[str, Any] | None = None) -> list[str]:
    """Each phase of a fit next to llama.cpp's best on this machine (same model, threads, build: the `curve`):
    prompt tokens at the one-chunk prompt-eval rate, generated tokens at the 16-row step rate. A phase's share of the
    limit = the time those two rates would need for its tokens / the time it took. With `long` (the curve with a
    long shared prompt), a second share uses its 16-row rate: generation over a long context, as in a posterior."""
    pe, gen = float(curve["prompt_eval_tok_per_s"]), float(curve["tok_per_s"]["16"])
    lg = float(long["tok_per_s"]["16"]) if long else None
    intro = (f"llama.cpp's best on this machine (default model, {curve['threads']} threads, same build; `curve` "
             f"above): prompt eval {pe:.1f} tok/s, generation {gen:.1f} tok/s at 16 rows after a "
             f"{curve['prompt_tokens']}-token prompt")
    if long:
        intro += f", {lg:.1f} tok/s at 16 rows after a {long['prompt_tokens']}-token prompt"
    out = ["", "## The limit, side by side", "",
           intro + ". For each phase of the after cell: what it reached, and the share of the limit (the time the "
           "best rates would need for the phase's prompt and generated tokens, over the time it took).", "",
           "| phase | prompt tokens decoded | generated | seconds | reached tok/s (decoded) | limit s | share of the "
           "limit |" + (" share, long-context generation rate |" if long else ""),
           "|---|---|---|---|---|---|---|" + ("---|" if long else "")]
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]["seconds"]):
        gen_t = v["completion_tokens"]
        prompt_t = max(0, v["decoded_tokens"] - gen_t)
        ideal = prompt_t / pe + gen_t / gen
        sec = max(v["seconds"], 1e-9)
        row = (f"| {k} | {prompt_t:,} | {gen_t:,} | {sec:.1f} | {v['decoded_tokens'] / sec:.1f} | {ideal:.1f} | "
               f"{100 * ideal / sec:.0f}% |")
        if lg:
            row += f" {100 * (prompt_t / pe + gen_t / lg) / sec:.0f}% |" if gen_t else " |"
        out.append(row)
    return out


@dataclass(frozen=True)
class Rate:
    """One measured llama_decode shape: `rows` per decode at `tok_per_s`; a generation "step" (one new row in each
    of `rows` sequences, every row's logits read) or "prompt" evaluation (rows of one sequence; `logits` whether
    every row's were read); `context` = the rows' mean position (the KV each row attends to)."""
    rows: int
    tok_per_s: float
    kind: str
    logits: bool
    context: int


def measured_rates(curves: Sequence[dict[str, Any]], chunks: Sequence[dict[str, Any]]) -> list[Rate]:
    """Every llama_decode shape measured on the machine: generation steps of n rows over n sequences (each `curve`,
    at its prompt length), prompt evaluation of one sequence in chunks of n rows (each `chunks` record's exact rates,
    without and with every row's logits, after its prefix) and in one 256-token chunk from position 0 (each curve's
    prompt eval)."""
    out: list[Rate] = []
    for c in curves:
        out += [Rate(int(n), float(r), "step", True, int(c.get("prompt_tokens", 0))) for n, r in c["tok_per_s"].items()]
        out.append(Rate(256, float(c["prompt_eval_tok_per_s"]), "prompt", False, 128))
    for ch in chunks:
        # the first records decoded a 256-token text from position 0; later ones continue a prefix
        ctx = int(ch.get("prefix_tokens", 0)) + int(ch.get("text_tokens", 256)) // 2
        for mode, logits in (("exact", False), ("exact_logits", True)):
            out += [Rate(int(n), float(r), "prompt", logits, ctx) for n, r in ch["tok_per_s"].get(mode, {}).items()]
    return out


def best_rate(measured: Sequence[Rate], shape: str, logits: bool | None = None, context: float | None = None) -> float:
    """llama.cpp's best tok/s for a `BackendWork.decode_shapes` key ("one:n" / "many:n" = up to n rows of one
    sequence / of several): the best measured at any size up to n.

    `logits` None (a record from before rows with logits were booked): the best of any kind, at any context — a
    step over several sequences that carries new rows' prompts runs at prompt-eval rates — so the limit is on the
    generous side (a share, if anything, understated). Otherwise the rate of rows that want logits or not: rows
    without logits are held to the best of anything (prompt evaluation skips the vocabulary projection, so it is
    the fastest); rows with logits in a "many" shape, to generation steps; in a "one" shape, to prompt evaluation
    with every row's logits or steps. And each measured shape (kind, logits, rows) counts at the context nearest to
    the rows' mean `context` from below (the shortest measured when none is below): attention grows with the KV a
    row reads, so a row after 800 tokens is held to what llama.cpp does after 640, not after 100."""
    n = int(shape.split(":")[1])
    fits = [m for m in measured if m.rows <= n]
    if logits is not None:
        if logits:
            fits = [m for m in fits if m.kind == "step" or (m.logits and shape.startswith("one:"))]
        groups: dict[tuple[str, bool, int], list[Rate]] = {}
        for m in fits:
            groups.setdefault((m.kind, m.logits, m.rows), []).append(m)
        fits = []
        for g in groups.values():
            below = [m for m in g if context is not None and m.context <= context]
            at = max(m.context for m in below) if below else min(m.context for m in g)
            fits += [m for m in g if m.context == at]
    return max((m.tok_per_s for m in fits), default=min(m.tok_per_s for m in measured))


def shape_limit(measured: Sequence[Rate], shape: str, r: dict[str, Any]) -> float:
    """Seconds llama.cpp's best would need for one shape's booked tokens (`BackendWork.decode_shapes` row): rows
    with and without logits apart, at their mean context, when the row booked them; else all at the shape's best."""
    tokens = int(r["tokens"])
    if "logits" not in r or not tokens:
        return tokens / best_rate(measured, shape)
    with_logits = min(tokens, int(r["logits"]))
    ctx = float(r.get("context", 0)) / tokens
    return ((tokens - with_logits) / best_rate(measured, shape, False, ctx)
            + with_logits / best_rate(measured, shape, True, ctx))


def shape_table(cells: dict[str, dict[str, Any]], curves: Sequence[dict[str, Any]],
                chunks: Sequence[dict[str, Any]]) -> list[str]:
    """Each phase of the runs that recorded their llama_decode shapes ({name: {"phases", "decode_shapes"}}),
    against llama.cpp's best for exactly those shapes (`shape_limit`): the issue's "≥ 70% of the best measured
    throughput for its batch shape". Limit = Σ over shapes of the phase's tokens / the best rate for that shape;
    share = limit / the phase's backend seconds (dlc's own work in the call included); the decode share divides by
    the seconds inside llama_decode only. Rows that book logits and context get a second share with the
    shape-blind rule (`best_rate` without them), to show what the finer limit changes."""
    measured = measured_rates(curves, chunks)
    curve = curves[0]
    lg = ", ".join(f"{c['prompt_tokens']}" for c in curves)
    out = ["", "## The limit by batch shape", "",
           "Every llama_decode of the cell booked under its phase and shape (one sequence or several, rows rounded "
           "up to a power of two), each shape against llama.cpp's best measured rate for it on the same machine "
           f"({curve.get('cpu', 'CPU not recorded')}, {curve['threads']} threads; `curve` at shared prompts of "
           f"{lg} tokens; `chunks` after prefixes of "
           f"{', '.join(str(c.get('prefix_tokens', 0)) for c in chunks) or 'none'} tokens). Best rate of any kind "
           "for up to n rows (tok/s): "
           + ", ".join(f"{2 ** k} {best_rate(measured, f'one:{2 ** k}'):.1f}" for k in range(10)) + ".",
           "", "Runs that booked which rows wanted logits and the rows' positions (`logits`, `context` in "
           "`decode_shapes`, since this change) are held to the finer limit of `best_rate`: rows with logits to "
           "generation steps (several sequences) or to prompt evaluation with every row's logits (one sequence), "
           "and every rate is taken at the measured context nearest below the rows' mean position; *blind* is the "
           "same phase held to the best of any kind at any context.", "",
           "| run | phase | decoded tokens | shapes (tokens) | rows with logits | mean context | seconds | limit s | "
           "share | share of decode time | blind share |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cid, c in cells.items():
        for phase, shapes in sorted(c["decode_shapes"].items(),
                                    key=lambda kv: -float((c.get("phases") or {}).get(kv[0], {}).get("seconds", 0))):
            sec = float((c.get("phases") or {}).get(phase, {}).get("seconds") or 0.0)
            dec = sum(float(r["seconds"]) for r in shapes.values())
            tokens = sum(int(r["tokens"]) for r in shapes.values())
            ideal = sum(shape_limit(measured, k, r) for k, r in shapes.items())
            booked = all("logits" in r for r in shapes.values())
            blind = sum(int(r["tokens"]) / best_rate(measured, k) for k, r in shapes.items())
            top = sorted(shapes.items(), key=lambda kv: -int(kv[1]["tokens"]))[:3]
            mix = ", ".join(f"{k} {int(r['tokens']):,}" for k, r in top) + (" …" if len(shapes) > 3 else "")
            logit_rows = f"{sum(int(r['logits']) for r in shapes.values()):,}" if booked else ""
            ctx = f"{sum(float(r['context']) for r in shapes.values()) / max(tokens, 1):.0f}" if booked else ""
            out.append(f"| {cid} | {phase} | {tokens:,} | {mix} | {logit_rows} | {ctx} | {sec:.1f} | {ideal:.1f} | "
                       f"{100 * ideal / max(sec, 1e-9):.0f}% | {100 * ideal / max(dec, 1e-9):.0f}% | "
                       + (f"{100 * blind / max(sec, 1e-9):.0f}% |" if booked else "|"))
    return out


def bound(before: dict[str, Any], curves: Sequence[dict[str, Any]]) -> list[str]:
    """The most any way of driving llama.cpp could give the before cell, from its own token counts: every prompt
    token at the best prompt-eval rate and every generated token at the best generation rate measured for the model
    at any row count (the 32-row step, more rows than any phase of the cell has in flight). A speed-up target above
    before / bound cannot be met by batching or scheduling; only asking for fewer tokens can."""
    before_s = float(before["wall_seconds"])
    gen_t = int(before["completion_tokens"])
    prompt_t = max(0, int(before["backend"]["decoded_tokens"]) - gen_t)
    pe = max(float(c["prompt_eval_tok_per_s"]) for c in curves)
    best_rows, gen = max(((n, float(r)) for c in curves for n, r in c["tok_per_s"].items()), key=lambda x: x[1])
    floor = prompt_t / pe + gen_t / gen
    text = (f"**The bound.** At the best rates measured for this model on this machine (prompt eval {pe:.1f} "
            f"tok/s, generation {gen:.1f} tok/s with {best_rows} rows), the before cell's {prompt_t:,} prompt and "
            f"{gen_t:,} generated tokens need {floor:.0f} s: **{before_s / floor:.2f}×** is the most batching or "
            "scheduling can give this cell.")
    if before_s / floor < 3:
        spare = before_s / 3 - prompt_t / pe
        text += (f" 3× ({before_s / 3:.0f} s) would need " + (
            f"generation at {gen_t / spare:.0f} tok/s, {gen_t / spare / gen:.1f}× the best measured rate," if spare > 0
            else f"prompt evaluation alone faster than {prompt_t / (before_s / 3):.0f} tok/s,")
            + " or fewer tokens (a change of the algorithm or its settings, not of how llama.cpp is driven).")
    return ["", text]


def _save(name: str, rec: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    print(json.dumps(rec, sort_keys=True)[:600], flush=True)


def report() -> str:
    recs = {p.stem: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))}
    if not recs:
        raise SystemExit(f"error: no measurements in {OUT}; run `python bench/batching.py curve` and `cell` first "
                         "(BATCHING.md is left as it is)")
    lines = ["# Generation batched across requests (issue 15)", "",
             "Generated by `python bench/batching.py report` from bench/batching_records/*.json (taken on an idle "
             "2-core machine: the load average before/after each measurement is in its row).", "",
             "Taken on: " + "; ".join(sorted({f"{r['cpu']} ({r['time'][:10]})" for r in recs.values() if r.get("cpu")})
                                      or ["CPU not recorded"])
             + f", {max(int(r.get('threads', 0)) for r in recs.values())} threads.", "",
             "## Step cost vs rows decoded together", "",
             "One llama_decode of n rows (one token per sequence, n sequences sharing a ~100-token prompt), mean of 12 "
             "steps after 3 warm-up steps; prompt eval = one 256-token chunk.", "",
             "| model | threads | load | " + " | ".join(f"{n} rows ms (tok/s)" for n in ROWS) + " | prompt eval tok/s |",
             "|---|---|---|" + "---|" * len(ROWS) + "---|"]
    for k, r in recs.items():
        if not k.startswith("curve-"):
            continue
        cells = [f"{r['step_ms'][str(n)]} ({r['tok_per_s'][str(n)]})" for n in ROWS]
        lines.append(f"| {r['model']} ({r['prompt_tokens']}-token prompt) | {r['threads']} | {r['load_before']}/{r['load_after']} | " + " | ".join(cells)
                     + f" | {r['prompt_eval_tok_per_s']} |")
    b, g, a = recs.get("cell-before"), recs.get("cell-groups"), recs.get("cell-after")
    if b and a:
        lines += ["", "## A DLN-2 cell before/after", "",
                  "bench/grid.py's DLN-2 navigate cell (train 40, dev 20, test 40, batch 8, N 4, K 3, hidden "
                  "max_tokens 64) with `iters = 1`, `dlc fit` in a fresh cache directory (nothing cached), default "
                  "model, same threads; before = the commit before batching (one request at a time, the samples of "
                  "one request side by side); " + ("groups = rows of all requests in fixed groups of 16 (4767bb4); "
                                                   if g else "") + "after = continuous batching (a finished row's "
                  "slot goes to the next row). The commit of each run's code is in its row.", "",
                  "| code | wall s | speed-up | completion tokens | decoded tokens | decoded tok/s of decode time | "
                  "throughput ratio | load before/after | dev | test |",
                  "|---|---|---|---|---|---|---|---|---|---|"]

        def rate(r: dict[str, Any]) -> float | None:
            be = r.get("backend") or {}
            return be["decoded_tokens"] / be["decode_seconds"] if be.get("decode_seconds") else None

        for r in (x for x in (b, g, a) if x):
            rr, rb = rate(r), rate(b)
            code = r["label"] + (f" ({r['commit']})" if r.get("commit") else "")
            lines.append(f"| {code} | {r['wall_seconds']} | {b['wall_seconds'] / r['wall_seconds']:.2f}× | "
                         f"{r['completion_tokens']:,} | {(r.get('backend') or {}).get('decoded_tokens', 0):,} | "
                         f"{f'{rr:.1f}' if rr else ''} | {f'{rr / rb:.2f}×' if rr and rb else ''} | "
                         f"{r['load_before']}/{r['load_after']} | "
                         f"{r['dev'][0]:.2f} → {r['dev'][1]:.2f} | {r['test'][0]:.2f} → {r['test'][1]:.2f} |")
        lines += ["", f"Speed-up of the cell: **{b['wall_seconds'] / a['wall_seconds']:.2f}×** (wall time). The "
                  "runs differ in their texts (a batch changes llama.cpp's floating-point path, so sampled texts "
                  "differ), hence the token counts and accuracies, and a different text can change how much work "
                  "the fit asks for (a proposal rejected before scoring in one run may be scored and validated in "
                  "the other); the throughput ratio (tokens through llama_decode per second of decoding) compares "
                  "the two at equal work. The prompts learned are in the JSON files."]
        cols = [r for r in (g, a) if r and (r.get("backend") or {}).get("phases")]
        if cols:
            names = sorted({k for r in cols for k in r["backend"]["phases"]},
                           key=lambda k: -cols[-1]["backend"]["phases"].get(k, {"seconds": 0})["seconds"])
            lines += ["", "Backend time per phase: seconds, decoded tokens/s (prompt and generated tokens through "
                      "llama_decode) and completion tokens/s:", "",
                      "| phase | " + " | ".join(f"{r['label']}: s | decoded tok/s | completion tok/s" for r in cols)
                      + " |", "|---|" + "---|---|---|" * len(cols)]
            for k in names:
                row = []
                for r in cols:
                    v = r["backend"]["phases"].get(k)
                    if not v:
                        row.append(" | | ")
                        continue
                    sec = max(v["seconds"], 1e-9)
                    row.append(f"{v['seconds']:.1f} | {v['decoded_tokens'] / sec:.1f} | "
                               f"{v['completion_tokens'] / sec:.1f}")
                lines.append(f"| {k} | " + " | ".join(row) + " |")
    lim = recs.get("curve-default")
    if a and lim and (a.get("backend") or {}).get("phases"):
        longs = [r for k, r in recs.items() if k.startswith("curve-default-ctx")]
        lines += limit_table(a["backend"]["phases"], lim, longs[0] if longs else None)
        if b and (b.get("backend") or {}).get("decoded_tokens"):
            lines += bound(b, [lim, *longs])
    # runs that booked their decode shapes, on the curve's machine: this file's cells, then the grid's
    cells = {f"batching {k}": r["backend"] for k, r in recs.items()
             if (r.get("backend") or {}).get("decode_shapes") and lim and r.get("cpu") == lim.get("cpu")}
    for p in sorted(CELLS.glob("*.json")):
        r = json.loads(p.read_text())
        machine = r.get("machine") or {}
        # a cell whose record notes what ran beside it was not timed on an idle machine: not a limit measurement
        if (r.get("cost") or {}).get("decode_shapes") and lim and machine.get("cpu") == lim.get("cpu") \
                and not machine.get("note"):
            cells[f"grid {p.stem}"] = r["cost"]
    if lim and cells:
        curves = [lim] + sorted((r for k, r in recs.items() if k.startswith("curve-default-ctx")
                                 and r.get("cpu") == lim.get("cpu")), key=lambda r: r["prompt_tokens"])
        chunks = [json.loads(p.read_text()) for p in sorted(SCORING.glob("chunks-default*.json"))]
        lines += shape_table(cells, curves, [c for c in chunks if c.get("cpu") == lim.get("cpu")])
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curve")
    c.add_argument("--models", default="tiny,small,default")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--context", type=int, default=0, help="prompt tokens the rows share (default ~106)")
    e = sub.add_parser("cell")
    e.add_argument("--before", help="a git worktree of the code to compare with (not needed with --only after)")
    e.add_argument("--data-dir", default=os.environ.get("DLC_DATA_DIR", ""))
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--only", choices=("before", "after"))
    e.add_argument("--posterior-max-tokens", type=int, default=512,
                   help="the hidden layer's posterior sample cap (default 512, as every recorded cell ran; 0: dlc's "
                        "default, the layer's max_tokens = 64)")
    e.add_argument("--label", default="", help="save this tree's run as cell-LABEL (default: after), e.g. a rerun "
                   "that records decode shapes without replacing the measured after cell")
    sub.add_parser("report")
    a = ap.parse_args(argv)
    if a.cmd == "curve":
        for m in a.models.split(","):
            _save(f"curve-{m}" + (f"-ctx{a.context}" if a.context else ""), curve(m, a.threads, a.context))
    elif a.cmd == "cell":
        if a.only != "after" and not a.before:
            ap.error("cell needs --before DIR (a git worktree of the code to compare with) unless --only after")
        for label, code in (("after", REPO), ("before", Path(a.before or "."))):
            if a.only in (None, label):
                name = (a.label or label) if label == "after" else label
                _save(f"cell-{name}", {**cell(code, name, a.data_dir, a.threads, a.posterior_max_tokens),
                                       "posterior_max_tokens": a.posterior_max_tokens})
    else:
        (BENCH / "BATCHING.md").write_text(report(), encoding="utf-8")
        print(f"wrote {BENCH / 'BATCHING.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

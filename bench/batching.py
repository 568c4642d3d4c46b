"""Issue 15's speed measurements, on an idle machine only (threads and load average are written beside every number).

    python bench/batching.py curve [--models tiny,small,default]   # llama.cpp step cost vs rows decoded together
    python bench/batching.py cell --before DIR [--data-dir D]      # a DLN-2 cell: code in DIR (before) vs this tree
    python bench/batching.py report                                # bench/BATCHING.md from bench/out/batching/*.json

`curve`: the model loaded as dlc loads it (EmbeddedLM, 2 threads), one ~100-token prompt in sequence 0, copied into
n sequences; a step decodes one token in each of them (one llama_decode of n rows). 3 warm-up steps, then the mean
of 12. Also llama.cpp's prompt-eval throughput on one 256-token chunk: the two limits a fit can reach.
`cell`: the bench grid's DLN-2 navigate cell (bench/grid.py settings) with `iters = 1`, run as `dlc fit` in a fresh
cache directory, once with the code in --before (a git worktree of the commit before batching) and once with this
tree; wall time, completion tokens and, for this tree, the backend's seconds and tokens per phase.
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
from pathlib import Path
from typing import Any, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "batching"
ROWS = (1, 2, 4, 8, 16, 32)


def _machine() -> dict[str, Any]:
    return {"threads": int(os.environ.get("DLC_THREADS", "2")), "load_avg_1m": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def curve(model: str, threads: int) -> dict[str, Any]:
    from dlc.lm.base import ChatPrompt
    from dlc.lm.embedded import EmbeddedLM

    before = _machine()
    lm = EmbeddedLM(model, n_ctx=1024, n_seq_max=max(ROWS) + 1, n_threads=threads)
    prompt = lm._prompt_tokens(ChatPrompt("Think step by step about the following question and explain your "
                                          "reasoning in detail before giving the answer. " * 4))
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
            "load_after": after["load_avg_1m"], "time": before["time"],
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
  backward { posterior = { prior_answer: 0.5, prior: 0.5 } }
}

OUTPUT

output y { target = label  metric = accuracy }

data { task = "navigate"  train_size = 40  dev_size = 20  test_size = 40 }
fit  { iters = 1  batch_size = 8  num_p_samples = 4  num_h_samples = 3  val_freq = 1  tolerance = 2  use_memory = 2
       seed = 42 }
"""


def cell(code_dir: Path, label: str, data_dir: str, threads: int) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    from grid import _output_layer

    work = Path(tempfile.mkdtemp(prefix=f"dlc-batching-{label}-"))
    net = work / "dln2.dln"
    net.write_text(NET.replace("OUTPUT", _output_layer("navigate", "x, h", "residual")), encoding="utf-8")
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
    out = {"label": label, "code": str(code_dir), "wall_seconds": round(wall, 1), "threads": threads,
           "load_before": before["load_avg_1m"], "load_after": _machine()["load_avg_1m"], "time": before["time"],
           "completion_tokens": usage["completion_tokens"], "prompt_tokens": usage["prompt_tokens"],
           "calls": usage["calls"], "backend": usage.get("backend"),
           "dev": [res["baseline"]["dev_accuracy"], res["dev_accuracy"]],
           "test": [res["baseline"]["test_accuracy"], res["test_accuracy"]], "prompts": res["prompts"]}
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "trace.jsonl", OUT / f"cell-{label}-trace.jsonl")   # bench/racing.py replays it
    shutil.rmtree(work, ignore_errors=True)
    return out


def _save(name: str, rec: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    print(json.dumps(rec, sort_keys=True)[:600], flush=True)


def report() -> str:
    recs = {p.stem: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))}
    lines = ["# Generation batched across requests (issue 15)", "",
             "Generated by `python bench/batching.py report` from bench/out/batching/*.json (taken on an idle "
             "2-core machine: the load average before/after each measurement is in its row).", "",
             "## Step cost vs rows decoded together", "",
             "One llama_decode of n rows (one token per sequence, n sequences sharing a ~100-token prompt), mean of 12 "
             "steps after 3 warm-up steps; prompt eval = one 256-token chunk.", "",
             "| model | threads | load | " + " | ".join(f"{n} rows ms (tok/s)" for n in ROWS) + " | prompt eval tok/s |",
             "|---|---|---|" + "---|" * len(ROWS) + "---|"]
    for k, r in recs.items():
        if not k.startswith("curve-"):
            continue
        cells = [f"{r['step_ms'][str(n)]} ({r['tok_per_s'][str(n)]})" for n in ROWS]
        lines.append(f"| {r['model']} | {r['threads']} | {r['load_before']}/{r['load_after']} | " + " | ".join(cells)
                     + f" | {r['prompt_eval_tok_per_s']} |")
    b, a = recs.get("cell-before"), recs.get("cell-after")
    if b and a:
        lines += ["", "## A DLN-2 cell before/after", "",
                  "bench/grid.py's DLN-2 navigate cell (train 40, dev 20, test 40, batch 8, N 4, K 3, hidden "
                  "max_tokens 64) with `iters = 1`, `dlc fit` in a fresh cache directory (nothing cached), default "
                  "model, same threads; before = the commit before batching (one request at a time, the samples of "
                  "one request side by side).", "",
                  "| code | wall s | completion tokens | completion tok/s of wall | load before/after | dev | test |",
                  "|---|---|---|---|---|---|---|"]
        for r in (b, a):
            lines.append(f"| {r['label']} | {r['wall_seconds']} | {r['completion_tokens']:,} | "
                         f"{r['completion_tokens'] / r['wall_seconds']:.1f} | {r['load_before']}/{r['load_after']} | "
                         f"{r['dev'][0]:.2f} → {r['dev'][1]:.2f} | {r['test'][0]:.2f} → {r['test'][1]:.2f} |")
        lines += ["", f"Speed-up of the cell: **{b['wall_seconds'] / a['wall_seconds']:.2f}×** (wall time, same run)."]
        ph = (a.get("backend") or {}).get("phases") or {}
        if ph:
            lines += ["", "Backend time per phase (after):", "",
                      "| phase | seconds | decoded tokens | decoded tok/s | completion tokens | completion tok/s |",
                      "|---|---|---|---|---|---|"]
            for k, v in sorted(ph.items(), key=lambda kv: -kv[1]["seconds"]):
                s = max(v["seconds"], 1e-9)
                lines.append(f"| {k} | {v['seconds']:.1f} | {v['decoded_tokens']:,} | {v['decoded_tokens'] / s:.1f} | "
                             f"{v['completion_tokens']:,} | {v['completion_tokens'] / s:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curve")
    c.add_argument("--models", default="tiny,small,default")
    c.add_argument("--threads", type=int, default=2)
    e = sub.add_parser("cell")
    e.add_argument("--before", required=True)
    e.add_argument("--data-dir", default=os.environ.get("DLC_DATA_DIR", ""))
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--only", choices=("before", "after"))
    sub.add_parser("report")
    a = ap.parse_args(argv)
    if a.cmd == "curve":
        for m in a.models.split(","):
            _save(f"curve-{m}", curve(m, a.threads))
    elif a.cmd == "cell":
        for label, code in (("after", REPO), ("before", Path(a.before))):
            if a.only in (None, label):
                _save(f"cell-{label}", cell(code, label, a.data_dir, a.threads))
    else:
        (BENCH / "BATCHING.md").write_text(report(), encoding="utf-8")
        print(f"wrote {BENCH / 'BATCHING.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

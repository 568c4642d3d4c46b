"""Merged vs exact scoring (issue 15, "label continuations of several prompts decoded together"), idle machine only.

    python bench/scoring.py measure --runs DIR,DIR,... [--data-dir D] [--threads 2]   # one record per run
    python bench/scoring.py report                                                     # bench/SCORING.md

`measure` rebuilds, from a bench cell's trace (bench/learning.py's runs), the first candidate-scoring call of its
fit exactly as the engine sends it: every candidate prompt of step 0 x the 8 examples of the batch x every verbalizer
(the batch's rendered contexts with the current prompt replaced by each candidate). The call is scored by the
default model (as dlc loads it: n_seq_max = batch_rows + 1 = 17, the given threads) once in exact mode and once in
merged mode (`model { scoring = merged }`), in alternating order from one task to the next, each from an empty KV
cache; then one candidate x 2 examples again by `score_reference` (each request alone, no sharing: the plain
evaluation). Recorded: wall and llama_decode seconds, decoded tokens and decodes of each mode; the largest and mean
|difference| of the merged and of the reference scores from the exact ones (nats, per continuation); answers
(most likely label) that differ, with the exact margin of each; and the candidate each mode would keep (the highest
mean log p(target | context), labels normalised as dlc.engine.labels does).
Records go to bench/scoring_records/ (in git), so the report is reproducible from the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "scoring_records"
sys.path.insert(0, str(BENCH))
from batching import _machine  # noqa: E402  (threads, load average, time, CPU: the same record fields)


def _call(run: Path, data_dir: str) -> tuple[str, list[Any], list[Any], list[str], list[str], list[float]]:
    """(task, requests, labels, candidates, targets, the run's own rewards) of step 0's candidate scoring."""
    from dlc.artifacts import manifest
    from dlc.data.loader import load_splits
    from dlc.engine.labels import label_requests
    from dlc.lm.base import ChatPrompt

    graph = manifest.from_json(json.loads((run / "graph.json").read_text()))
    rec = next(json.loads(ln) for ln in (run / "trace.jsonl").open() if '"layers"' in ln)
    node = graph.output
    step = rec["layers"][node]
    fwd = rec["forward"]["nodes"][node]
    ids = rec["forward"]["ids"]
    splits = load_splits(graph.data, tuple(graph.inputs), seed=graph.fit.seed, data_dir=data_dir)
    target = {e.id: e.target for e in splits.train}
    labels = graph.layers[node].output.labels
    reqs = []
    for cand in step["candidates"]:
        for ctx in fwd["contexts"]:
            assert ctx["user"].startswith(step["current"]), "the context does not start with the current prompt"
            user = cand + ctx["user"][len(step["current"]):]
            reqs += label_requests(ChatPrompt(user, system=ctx["system"], prefix=ctx["prefix"]), labels)
    return graph.data.task or run.name, reqs, list(labels), step["candidates"], [target[i] for i in ids], \
        step.get("reward") or []


def _score(lm: Any, reqs: list[Any]) -> tuple[list[Any], dict[str, float]]:
    lm._reset_memory()
    decodes: list[int] = []
    real = lm._decode

    def counting(items: Any, wanted: Any, **kw: Any) -> Any:
        decodes.append(len(items))
        return real(items, wanted, **kw)

    lm._decode = counting
    w0 = lm.work()
    t0 = time.perf_counter()
    try:
        res = lm.score(reqs)
    finally:
        lm._decode = real
    wall = time.perf_counter() - t0
    w1 = lm.work()
    return res, {"wall_seconds": round(wall, 2), "decode_seconds": round(w1.decode_seconds - w0.decode_seconds, 2),
                 "decoded_tokens": w1.decoded_tokens - w0.decoded_tokens, "decodes": len(decodes)}


def _dists(res: list[Any], labels: list[Any]) -> list[list[float]]:
    from dlc.engine.labels import label_logdist_from, verbalizers

    per = sum(len(verbalizers(lab)) for lab in labels)
    return [label_logdist_from(res[i:i + per], labels) for i in range(0, len(res), per)]


def measure(run: Path, data_dir: str, lms: dict[bool, Any], order: tuple[bool, bool], threads: int
            ) -> dict[str, Any]:
    task, reqs, labels, cands, targets, rewards = _call(run, data_dir)
    before = _machine()
    got: dict[bool, Any] = {}
    for exact in order:
        got[exact] = _score(lms[exact], reqs)
    after = _machine()
    exact_res, merged_res = got[True][0], got[False][0]
    diffs = [abs(a - b) for x, y in zip(exact_res, merged_res) for a, b in zip(x.logprobs, y.logprobs)]
    n_lab = [lab.name for lab in labels]
    de, dm = _dists(exact_res, labels), _dists(merged_res, labels)
    flips = []
    for k, (a, b) in enumerate(zip(de, dm)):
        ia, ib = max(range(len(a)), key=a.__getitem__), max(range(len(b)), key=b.__getitem__)
        if ia != ib:
            top = sorted(a)
            flips.append({"context": k, "exact": n_lab[ia], "merged": n_lab[ib],
                          "exact_margin": round(top[-1] - top[-2], 4)})
    b = len(targets)

    def rewards_of(d: list[list[float]]) -> list[float]:
        return [sum(d[c * b + j][n_lab.index(targets[j])] for j in range(b)) / b for c in range(len(cands))]

    re_, rm = rewards_of(de), rewards_of(dm)
    # the plain evaluation (one request alone, no sharing) of the first candidate on the first 2 examples
    per = len(reqs) // (len(cands) * b)
    sub = reqs[:2 * per]
    ref = lms[True].score_reference(sub)
    rdiff = [abs(x - y) for r, e in zip(ref, exact_res) for x, y in zip(r.logprobs, e.logprobs)]
    mdiff = [abs(x - y) for r, m in zip(ref, merged_res) for x, y in zip(r.logprobs, m.logprobs)]
    return {"task": task, "run": run.name, "candidates": len(cands), "examples": b, "requests": len(reqs),
            "order": ["exact" if o else "merged" for o in order], "threads": threads,
            "load_before": before["load_avg_1m"], "load_after": after["load_avg_1m"], "time": before["time"],
            "cpu": before["cpu"], "exact": got[True][1], "merged": got[False][1],
            "max_abs_diff": round(max(diffs), 4), "mean_abs_diff": round(sum(diffs) / len(diffs), 5),
            "answers": len(de), "flips": flips,
            "reward_exact": [round(x, 4) for x in re_], "reward_merged": [round(x, 4) for x in rm],
            "reward_trace": rewards, "kept_exact": re_.index(max(re_)), "kept_merged": rm.index(max(rm)),
            "reference_subset": len(sub), "ref_vs_exact_max": round(max(rdiff), 4),
            "ref_vs_merged_max": round(max(mdiff), 4)}


CHUNK_TEXT = 512        # tokens of the text `chunks` decodes


def chunks(model: str, threads: int, logits: bool = False, prefix_tokens: int = 100) -> dict[str, Any]:
    """Prompt evaluation vs rows per llama_decode: a fresh 512-token text decoded in chunks of n rows (one sequence,
    continuing a 100-token prefix), exact context (one KV stream per sequence) and merged (unified): where a
    scoring call's short suffixes lose against llama.cpp's best prompt-eval rate; `prefix_tokens` longer than 100:
    the same after a longer prefix (attention over more KV, as a suffix after a long shared prompt). With `logits`, a
    third row: exact
    context with every row's logits read as a score reads them (`_decode` with a target per row: the log-prob of the
    next token), the shape of scoring a whole hidden text (log p(h | x, pi), paper Eq. 3): llama.cpp projects every
    such row onto the vocabulary, which prompt evaluation skips."""
    from dlc.lm.base import ChatPrompt
    from dlc.lm.embedded import EmbeddedLM

    before = _machine()
    out: dict[str, Any] = {"model": model, "threads": threads, "time": before["time"], "cpu": before["cpu"],
                           "load_before": before["load_avg_1m"], "text_tokens": CHUNK_TEXT,
                           "tok_per_s": {}}
    for mode in ("exact", "merged") + (("exact_logits",) if logits else ()):
        lm = EmbeddedLM(model, n_ctx=max(1024, prefix_tokens + CHUNK_TEXT + 8), n_seq_max=17, n_threads=threads,
                        exact=mode != "merged")
        text = "Think step by step about the following question and explain your reasoning in detail. "
        prefix = lm._prompt_tokens(ChatPrompt(text * (4 + prefix_tokens // 16)))[:prefix_tokens]
        lm._load_prefix(prefix)
        out["prefix_tokens"] = len(prefix)
        body = (lm.tokenize(text * 80, special=False, add_bos=False))[:CHUNK_TEXT + 1]
        rates = {}
        for n in (16, 32, 64, 128, 256, 512):
            best = float("inf")
            for _ in range(2):
                lm._clear_seqs([1])
                lm._L.llama_memory_seq_cp(lm._mem, 0, 1, -1, -1)      # the text continues the prefix
                t0 = time.perf_counter()
                for start in range(0, CHUNK_TEXT, n):
                    part = body[start:min(start + n, CHUNK_TEXT)]
                    lm._decode([(t, len(prefix) + start + i, 1) for i, t in enumerate(part)],
                               {i: body[start + i + 1] for i in range(len(part))} if mode == "exact_logits" else {})
                best = min(best, time.perf_counter() - t0)
            rates[str(n)] = round(CHUNK_TEXT / best, 1)
        lm._clear_seqs([1])
        lm.close()
        out["tok_per_s"][mode] = rates
    out["load_after"] = _machine()["load_avg_1m"]
    return out


def _gap(r: dict[str, Any]) -> str:
    """When the modes keep different candidates: how far apart the two are in the exact rewards (nats)."""
    if r["kept_exact"] == r["kept_merged"]:
        return ""
    e = r["reward_exact"]
    return f" (exact rewards {e[r['kept_exact']] - e[r['kept_merged']]:.3f} apart)"


def report(records: list[dict[str, Any]], chunk_recs: list[dict[str, Any]] = (),  # type: ignore[assignment]
           split: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
    if not records:
        raise SystemExit("no records in bench/scoring_records/: run `python bench/scoring.py measure` first")
    r0 = records[0]
    lines = ["# Merged vs exact scoring (issue 15)", "",
             "Generated by `python bench/scoring.py report` from bench/scoring_records/*.json. Each row: the first "
             "candidate-scoring call of a bench cell's fit (its step-0 candidates x the 8 examples of its batch x every "
             "verbalizer, rebuilt from the cell's trace), scored by the default model in exact and in merged mode "
             f"({r0['cpu']}, {r0['threads']} threads, idle machine: load average before/after in the row).", "",
             "| task | requests | load | exact s | merged s | speed-up | exact decodes | merged decodes | decoded tokens "
             "exact / merged | max abs diff (nats) | mean abs diff | reference vs exact, max | answers changed "
             "(exact margin) | candidate kept exact / merged |", "|" + "---|" * 14]
    tot = {"exact": 0.0, "merged": 0.0}
    for r in records:
        e, m = r["exact"], r["merged"]
        tot["exact"] += e["wall_seconds"]
        tot["merged"] += m["wall_seconds"]
        flips = ", ".join(f"{f['exact']}→{f['merged']} ({f['exact_margin']:.3f})" for f in r["flips"]) or "none"
        lines.append(f"| {r['task']} | {r['requests']} | {r['load_before']}/{r['load_after']} | "
                     f"{e['wall_seconds']:.1f} | {m['wall_seconds']:.1f} | {e['wall_seconds'] / m['wall_seconds']:.2f}× | {e['decodes']} | "
                     f"{m['decodes']} | {e['decoded_tokens']:,} / {m['decoded_tokens']:,} | {r['max_abs_diff']:.3f} | "
                     f"{r['mean_abs_diff']:.4f} | {r['ref_vs_exact_max']:.3f} | {len(r['flips'])} of {r['answers']}: "
                     f"{flips} | {r['kept_exact']} / {r['kept_merged']}{_gap(r)} |")
    n_flip = sum(len(r["flips"]) for r in records)
    n_ans = sum(r["answers"] for r in records)
    same = sum(r["kept_exact"] == r["kept_merged"] for r in records)
    gains = sorted(r["exact"]["wall_seconds"] / r["merged"]["wall_seconds"] for r in records)
    lines += ["", f"Over the {len(records)} calls: exact {tot['exact']:.0f} s, merged {tot['merged']:.0f} s "
              f"(**{tot['exact'] / tot['merged']:.2f}×**; per call {gains[0]:.2f}× to {gains[-1]:.2f}×); {n_flip} of "
              f"{n_ans} answers differ; the candidate kept is "
              f"the same in {same} of {len(records)} calls. *Reference vs exact*: the largest difference between the "
              "exact scores and a plain evaluation of the same requests (one candidate x 2 examples, each request "
              "alone): llama.cpp's batch-shape noise, against which the merged differences are to be read."]
    if split:
        lines += ["", "**With one KV stream per sequence** (the exact mode's context; the first version of merged "
                  "scoring) the merged call was no faster: llama.cpp cuts a batch over several streams into "
                  "micro-batches that take equally many tokens of every sequence (`split_equal`), so suffixes of "
                  "different lengths are decoded a few rows at a time. Merged mode therefore uses one unified KV "
                  "stream. Measured with the per-stream context: " + "; ".join(
                      f"{r['task']} exact {r['exact']['wall_seconds']:.1f} s, merged {r['merged']['wall_seconds']:.1f}"
                      f" s ({r['exact']['wall_seconds'] / r['merged']['wall_seconds']:.2f}×, load "
                      f"{r['load_before']}/{r['load_after']})" for r in split) + "."]
    for c in chunk_recs:
        sizes = list(c["tok_per_s"]["exact"])
        lines += ["", f"**Prompt evaluation vs rows per decode** ({c['model']} model, {c['threads']} threads, load "
                  f"{c['load_before']}/{c['load_after']}; a {c.get('text_tokens', 256)}-token text decoded in chunks "
                  f"of n rows after a {c.get('prefix_tokens', 100)}-token prefix, best of 2; exact_logits = every "
                  "row's logits read), "
                  "tokens/s:", "", "| context | " + " | ".join(f"{n} rows" for n in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for mode, rates in c["tok_per_s"].items():
            lines.append(f"| {mode} | " + " | ".join(f"{rates[n]:.1f}" if n in rates else "" for n in sizes) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--runs", required=True, help="comma-separated run directories of bench cells")
    m.add_argument("--data-dir", default=os.environ.get("DLC_DATA_DIR", str(REPO.parent / "shared" / "data")))
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--model", default="default")
    c = sub.add_parser("chunks")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--model", default="default")
    c.add_argument("--logits", action="store_true", help="also measure with every row's logits read")
    c.add_argument("--prefix", type=int, default=100, help="tokens of the prefix the text continues (default 100)")
    sub.add_parser("report")
    a = ap.parse_args(argv)
    if a.cmd == "chunks":
        rec = chunks(a.model, a.threads, a.logits, a.prefix)
        OUT.mkdir(parents=True, exist_ok=True)
        name = f"chunks-{a.model}" + (f"-prefix{a.prefix}" if a.prefix != 100 else "")
        (OUT / f"{name}.json").write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        print(rec)
        return 0
    if a.cmd == "report":
        recs = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json")) if not p.name.startswith("chunks-")]
        extra = {p.name: json.loads(p.read_text()) for p in sorted(OUT.glob("chunks-*.json"))}
        split = [json.loads(p.read_text()) for p in sorted((OUT / "per-sequence-kv").glob("*.json"))]
        (BENCH / "SCORING.md").write_text(report(recs, list(extra.values()), split), encoding="utf-8")
        print((BENCH / "SCORING.md").read_text())
        return 0
    from dlc.lm.embedded import EmbeddedLM

    lms = {exact: EmbeddedLM(a.model, n_ctx=4096, n_seq_max=17, n_threads=a.threads, exact=exact)
           for exact in (True, False)}
    out = OUT if a.model == "default" else Path(os.environ.get("TMPDIR", "/tmp")) / "dlc-scoring-smoke"
    out.mkdir(parents=True, exist_ok=True)
    for k, run in enumerate(a.runs.split(",")):
        order = (True, False) if k % 2 == 0 else (False, True)
        rec = measure(Path(run), a.data_dir, lms, order, a.threads)
        (out / f"{rec['task']}.json").write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        print(f"{rec['task']}: exact {rec['exact']['wall_seconds']} s, merged {rec['merged']['wall_seconds']} s, "
              f"max diff {rec['max_abs_diff']}, flips {len(rec['flips'])}, load {rec['load_before']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

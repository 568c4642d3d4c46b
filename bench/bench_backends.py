"""Benchmark of the embedded backend (not a test): per available model, prompt evaluation tokens/s, generation
tokens/s, and scoring throughput with and without prefix sharing. Writes bench/results_embedded.json and the table
between the `embedded` markers of bench/README.md.

    python bench/bench_backends.py [--models tiny,small,default] [--threads N]

The scoring workload is DLN's: 20 continuations (labels and short hidden texts, 1-12 tokens) of one ~300-token
prompt. "with sharing" is `EmbeddedLM.score` (the prompt is decoded once, its KV copied to the continuation
sequences); "without" is `score_reference` (every prompt + continuation decoded from scratch).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlc.errors import DlcError  # noqa: E402
from dlc.lm.base import GenerateRequest, ScoreRequest  # noqa: E402
from dlc.lm.embedded import EmbeddedLM, default_threads  # noqa: E402
from dlc.lm.models import resolve_model  # noqa: E402

HERE = Path(__file__).resolve().parent
CONTINUATIONS = [" positive", " negative", " neutral", " Positive", " Negative", " yes", " no", " (A)", " (B)",
                 " (C)", " The answer is (A).", " It is subjective.", " It is objective.",
                 " The reviewer liked the film a lot.", " The reviewer did not like it.", " 4", " 42",
                 " Because the sentence expresses an opinion, it is subjective.", " objective", " subjective"]


def long_prompt(lm: EmbeddedLM, n_tokens: int = 300) -> str:
    words = ("The movie follows a family through a long winter in the mountains, and the reviewer discusses "
             "the acting, the photography, the slow pacing and the ending in some detail. ").split()
    text = "Read the review and classify its sentiment.\n\nReview:"
    i = 0
    while len(lm.tokenize(text)) < n_tokens - 4:
        text += " " + words[i % len(words)]
        i += 1
    return text + "\nSentiment:"


def bench_model(name: str, threads: int) -> dict[str, object]:
    resolved = resolve_model(name)
    t0 = time.perf_counter()
    lm = EmbeddedLM(resolved, n_ctx=1024, n_seq_max=8, n_threads=threads)
    load_s = time.perf_counter() - t0
    prompt = long_prompt(lm)
    n_prompt = len(lm.tokenize(prompt))
    lm.score_reference([ScoreRequest("warm up", " now")])
    # prompt evaluation: a fresh 300-token prompt, one sequence
    t0 = time.perf_counter()
    lm.score_reference([ScoreRequest(prompt, " positive")])
    pe_s = time.perf_counter() - t0
    # generation: greedy, 64 tokens after a short prompt (prompt time is measured and subtracted)
    short = "Write a long story about a lighthouse keeper.\n\nOnce upon a time"
    t0 = time.perf_counter()
    lm.score_reference([ScoreRequest(short, " x")])
    short_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = lm.generate([GenerateRequest(short, max_tokens=64, temperature=0.0)])[0]
    gen_s = time.perf_counter() - t0 - short_s
    reqs = [ScoreRequest(prompt, c) for c in CONTINUATIONS]
    lm._reset_memory()
    t0 = time.perf_counter()
    shared = lm.score(reqs)
    shared_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = lm.score_reference(reqs)
    plain_s = time.perf_counter() - t0
    max_diff = max(abs(a - b) for x, y in zip(shared, plain) for a, b in zip(x.logprobs, y.logprobs))
    lm.close()
    return {"model": name, "description": resolved.description, "threads": threads, "load_s": load_s,
            "prompt_tokens": n_prompt, "prompt_eval_tok_s": n_prompt / pe_s,
            "gen_tokens": g.completion_tokens, "gen_tok_s": g.completion_tokens / max(gen_s, 1e-9),
            "score_n": len(reqs), "score_shared_s": shared_s, "score_plain_s": plain_s,
            "score_max_abs_diff": max_diff, "loadavg_1m": os.getloadavg()[0]}


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| model | threads | load s | prompt eval tok/s | generation tok/s | 20 scores, shared prefix | "
             "20 scores, no sharing | speed-up | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} ({r['description']}) | {r['threads']} | {r['load_s']:.2f} | "
                     f"{r['prompt_eval_tok_s']:.0f} | {r['gen_tok_s']:.1f} | {r['score_shared_s']:.2f} s | "
                     f"{r['score_plain_s']:.2f} s | {r['score_plain_s'] / r['score_shared_s']:.1f}x | "
                     f"{r['score_max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,small,default")
    ap.add_argument("--threads", type=int, default=0, help="0: dlc's default (idle cores)")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        try:
            rows.append(bench_model(name, args.threads or default_threads()))
            print(json.dumps(rows[-1]), flush=True)
        except DlcError as e:
            print(f"skip {name}: {e}", file=sys.stderr)
    (HERE / "results_embedded.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    md = table(rows)
    print(md)
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = f"<!-- embedded:begin -->\n{md}\n<!-- embedded:end -->"
    text = re.sub(r"<!-- embedded:begin -->.*?<!-- embedded:end -->", lambda _: block, text, flags=re.S)
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

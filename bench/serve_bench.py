"""`dlc serve` throughput: requests/s for scoring (echo, max_tokens=1) and short greedy generation, through
OpenAILM, against `dlc serve --model MODEL --port 0` started as a subprocess. Not a test.

    python bench/serve_bench.py --model tiny --requests 40
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from dlc.lm.base import ChatPrompt, GenerateRequest, ScoreRequest
from dlc.lm.openai_backend import OpenAILM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    a = ap.parse_args()
    proc = subprocess.Popen([sys.executable, "-m", "dlc", "serve", "--model", a.model, "--port", "0",
                             "--n-ctx", "1024"], stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().split("listening on ", 1)[1].strip()  # type: ignore[union-attr]
    try:
        t = time.time()
        lm = OpenAILM(a.model, [url], max_concurrency=a.concurrency, timeout=600)
        probe_s = time.time() - t
        base = "Review: {}\nIs this review positive or negative?"
        scores = [ScoreRequest(ChatPrompt(base.format(f"the film number {i} was a pleasant surprise")), lab)
                  for i in range(a.requests // 2) for lab in ("positive", "negative")]
        t = time.time()
        lm.score(scores)
        score_rps = len(scores) / (time.time() - t)
        gens = [GenerateRequest(ChatPrompt(f"Name a color (#{i})."), max_tokens=8) for i in range(a.requests // 2)]
        t = time.time()
        lm.generate(gens)
        gen_rps = len(gens) / (time.time() - t)
        lm.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait()
    print(f"| {a.model} | {probe_s:.1f} | {len(scores)} | {score_rps:.2f} | {len(gens)} | {gen_rps:.2f} |")


if __name__ == "__main__":
    main()

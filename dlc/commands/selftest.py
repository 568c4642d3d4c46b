"""`dlc selftest [--model tiny]`: load the embedded model in a subprocess, decode a few tokens, score a continuation.

Why a subprocess: a llama-cpp-python wheel built with the default flags enables AMX and dies with SIGSEGV at the first
decode on some CPUs. In-process that is a core dump with no message; here the parent sees the signal and
names the fix (rebuild with the README's CMAKE_ARGS). The child also checks that the exact scorer (prefix sharing)
agrees with a plain full-sequence evaluation, so a mis-built library that computes garbage is caught too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

from dlc.errors import DlcError, DlcLMError

CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
              "-DLLAVA_BUILD=OFF")
REBUILD = (f'CMAKE_ARGS="{CMAKE_ARGS}" pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python '
           f'llama-cpp-python==0.3.36')
PROMPT = "The capital of France is"
CONTINUATION = " Paris"
CRASH_ENV = "DLC_SELFTEST_CRASH"   # tests only: the child kills itself with this signal after loading


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("selftest", help="check that the embedded model loads, generates and scores",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | small | default | a GGUF path (default: tiny)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the check is abandoned")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = selftest(args.model, timeout=args.timeout)
    print(format_report(report))
    return 0


def selftest(model: str = "tiny", *, timeout: float = 600.0) -> dict[str, object]:
    """Run the check in a child process; return its report, or raise DlcLMError naming the fix."""
    cmd = [sys.executable, "-m", "dlc.commands.selftest", model]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise DlcLMError(f"selftest of model '{model}' did not finish in {timeout:.0f} s", code="E646",
                         hint="the machine may be overloaded; retry with --timeout, or try --model tiny") from e
    stages = [ln[len("stage: "):] for ln in proc.stdout.splitlines() if ln.startswith("stage: ")]
    stage = stages[-1] if stages else "start"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        raise DlcLMError(f"the embedded model crashed with {name} during '{stage}' (model '{model}')", code="E645",
                         hint=f"llama-cpp-python was built for the wrong CPU (a default build enables AMX); "
                              f"rebuild it: {REBUILD}")
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        report = json.loads(last)
    except ValueError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DlcLMError(f"the selftest child failed (exit {proc.returncode}) during '{stage}': {tail}",
                         code="E646", hint=f"if llama-cpp-python was just installed, rebuild it: {REBUILD}")
    if "error" in report:
        raise DlcLMError(str(report["error"]), code=str(report.get("code") or "E646"),
                         hint=report.get("hint") or None)  # type: ignore[arg-type]
    return report


def format_report(r: dict[str, object]) -> str:
    return "\n".join([
        f"selftest ok: {r['model']} ({r['description']}, sha256 {str(r['sha256'])[:12]}…)",
        f"  load {r['load_s']:.2f} s; prompt {r['prompt_tokens']} tokens; generated {r['gen_tokens']} tokens "
        f"at {r['gen_tok_s']:.1f} tok/s: {r['text']!r}",
        f"  log p({CONTINUATION!r} | {PROMPT!r}) = {r['logp']:.4f} (exact scorer; full-sequence reference "
        f"{r['logp_ref']:.4f})",
    ])


def _child(model: str) -> int:
    """Runs in the subprocess: prints `stage: ...` lines as it goes, then one JSON report line."""
    def stage(name: str) -> None:
        print(f"stage: {name}", flush=True)

    try:
        from dlc.lm.base import GenerateRequest, ScoreRequest
        from dlc.lm.embedded import EmbeddedLM
        from dlc.lm.models import resolve_model

        stage("resolve")
        resolved = resolve_model(model)
        stage("load")
        t0 = time.perf_counter()
        lm = EmbeddedLM(resolved, n_ctx=256, n_seq_max=2)
        load_s = time.perf_counter() - t0
        crash = os.environ.get(CRASH_ENV)
        if crash:
            stage("decode")
            os.kill(os.getpid(), getattr(signal, crash))
        stage("decode")
        t0 = time.perf_counter()
        gen = lm.generate([GenerateRequest(PROMPT, max_tokens=8, temperature=0.0)])[0]
        gen_s = time.perf_counter() - t0
        stage("score")
        lp = lm.score([ScoreRequest(PROMPT, CONTINUATION)])[0].logp_sum
        lp_ref = lm.score_reference([ScoreRequest(PROMPT, CONTINUATION)])[0].logp_sum
        lm.close()
        if not (math.isfinite(lp) and lp <= 0 and abs(lp - lp_ref) <= 1e-3):
            raise DlcLMError(f"the scorer is inconsistent: log p = {lp} vs reference {lp_ref}", code="E646",
                             hint=f"llama-cpp-python may be mis-built; rebuild it: {REBUILD}")
        if model == "tiny" and lp < -2.0:  # measured -0.264 on a correct build
            raise DlcLMError(f"model 'tiny' scores log p(' Paris' | ...) = {lp:.3f}, expected about -0.26",
                             code="E646", hint=f"llama-cpp-python computes wrong logits; rebuild it: {REBUILD}")
        print(json.dumps({"model": model, "description": resolved.description, "sha256": resolved.sha256,
                          "load_s": load_s, "prompt_tokens": gen.prompt_tokens, "gen_tokens": gen.completion_tokens,
                          "gen_tok_s": gen.completion_tokens / max(gen_s, 1e-9), "text": gen.texts[0],
                          "logp": lp, "logp_ref": lp_ref}), flush=True)
        return 0
    except DlcError as e:
        print(json.dumps({"error": e.message, "code": e.code, "hint": e.hint}), flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1] if len(sys.argv) > 1 else "tiny"))

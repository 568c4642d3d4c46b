"""Peer baseline: DSPy's COPRO instruction optimizer on the same model and the same splits as our DLN cells.

    python bench/dspy_baseline.py --tasks trec,subj --seeds 42 [--breadth 3 --depth 2] [--data-dir DIR]

One JSON file per (task, seed) cell: bench/cells/dspy-copro-<task>-s<seed>.json (written atomically; a complete
file makes the script skip that cell, so an interrupted run resumes per cell).

Why these choices:

- **COPRO, not MIPROv2.** DLN-1 learns one instruction per layer, zero-shot. COPRO is DSPy's optimizer that does
  exactly that (propose instructions with the LM, score each on the trainset, re-propose from the scored
  attempts); MIPROv2 also bootstraps and selects few-shot demonstrations, which is a different method (and its
  multi-turn demo messages would not fit `dlc serve`'s single-turn chat route).
- **Same model, through `dlc serve`.** The embedded `default` model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M) is served
  as a subprocess, `dlc serve --model default --port 0` on 127.0.0.1 with `DLC_THREADS=1` (another benchmark owns
  the other core), and DSPy talks to it as an OpenAI-compatible server (`openai/<served name>`, `api_base`).
  DSPy's default ChatAdapter is used (with its built-in JSONAdapter fallback), i.e. DSPy as a user runs it: it
  sends one system + one user message to `/v1/chat/completions`, which `dlc serve` accepts.
- **`engine="litellm"`.** DSPy 3.4's default engine (lm15) fans a request with `n > 1` out into n separate
  requests with identical parameters. `dlc serve` samples deterministically from (seed, sample index), with seed 0
  when none is given, so the n fanned-out requests come back identical and COPRO's breadth collapses to one
  candidate. The LiteLLM engine sends `n` in one request; the server then draws n different samples.
- **Same splits.** `dlc.data.load_splits(DataConfig(task, train_size=24, dev_size=20, test_size=40), ("x",),
  seed=SEED, data_dir=...)`, the harness's call (default `cut = "first"`: with it the splits do not depend on the
  seed). The input text is the example's `x` (as our DLN layers see it), the target its canonical label.
- **Program and metric.** `dspy.Predict` over `text -> label: Literal[<task labels>]`, instructions = the task's
  initial instruction, temperature 0; metric = exact label match. An unparseable answer scores 0 (as in DSPy's
  Evaluate); any other error (server down, HTTP error) aborts the cell instead of silently scoring 0.
- **COPRO settings.** breadth 3, depth 2, init_temperature 0.7 by default, compiled on the 24 train examples (COPRO
  scores candidates on its trainset); the 0-shot program and the optimized one are evaluated on dev (20) and
  test (40). The seed goes to every LM request (`seed`), which drives the server's sampling of proposals.
  Measured on the 2-core machine with one server thread (the other core busy): ~7 s per answer, ~1.8 requests
  per answer (see below), so breadth 3 x depth 2 (6 candidates x 24 examples) is 17-23 min of optimisation and
  a cell 30-37 min with its four evaluations; breadth 4 would be ~45 min.
- **Parsing.** The model often writes `[[ ## label ## ]] = objective` on one line, which the ChatAdapter cannot
  parse; DSPy then asks again through its JSONAdapter (`json_fallback_calls` in the cost). Both are DSPy's stock
  behaviour and are kept; only an unparseable COPRO *proposal* is tolerated (make_adapter).
- **Cache.** DSPy's disk cache is off; each cell gets a fresh in-memory cache, so a rerun is not served from an
  earlier run, while repeated identical requests inside a cell (e.g. the optimized program = the initial one) are
  counted as cache hits and cost nothing, like dlc's own request dedup. `--no-cache` turns it off.
- **Cost.** From the LMs' histories: calls that reached the server, their prompt and completion tokens (the
  usage the server reports), cache hits, and wall time of the optimisation and of the evaluations. `dlc serve`
  keeps no counters of its own (its routes are /v1/models, /v1/completions, /v1/chat/completions,
  /apply-template, /health), so the server-side numbers are the per-response usage it returns.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from served import REPO, DlcServer, Fatal  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "cells"
CACHE_ROOT = REPO / "bench" / ".cache"
METHOD = "dspy-copro"
SIZES = {"train": 24, "dev": 20, "test": 40}

# litellm fetches a model price map from the internet at import unless told to use its bundled copy
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


# ------------------------------------------------------------------------------------------------- accounting


@dataclass
class Cost:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    json_fallback_calls: int = 0     # second calls: DSPy's ChatAdapter could not parse, JSONAdapter asked again
    unparseable: int = 0             # answers neither adapter could parse (scored 0)

    def add(self, other: Cost) -> Cost:
        return Cost(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                    self.completion_tokens + other.completion_tokens, self.cache_hits + other.cache_hits,
                    self.seconds + other.seconds, self.json_fallback_calls + other.json_fallback_calls,
                    self.unparseable + other.unparseable)

    def to_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cache_hits": self.cache_hits, "seconds": round(self.seconds, 2),
                "json_fallback_calls": self.json_fallback_calls, "unparseable_answers": self.unparseable}


def _usage_cost(entries: Sequence[dict[str, Any]]) -> Cost:
    """Calls, tokens and cache hits of LM history entries (a cache hit carries no usage)."""
    c = Cost()
    for e in entries:
        usage = e.get("usage") or {}
        if "response_format" in (e.get("kwargs") or {}):   # only DSPy's JSONAdapter sets it
            c.json_fallback_calls += 1
        hit = bool(getattr(e.get("response"), "cache_hit", False)) or not usage
        if hit:
            c.cache_hits += 1
            continue
        c.calls += 1
        c.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        c.completion_tokens += int(usage.get("completion_tokens") or 0)
    return c


class Meter:
    """Cost of a phase: the new history entries of the given LMs, and the wall time."""

    def __init__(self, *lms: Any) -> None:
        self.lms = lms

    def __enter__(self) -> Meter:
        self.marks = [len(lm.history) for lm in self.lms]
        self.t0 = time.monotonic()
        self.cost = Cost()
        self.per_lm: list[Cost] = []
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.monotonic() - self.t0
        self.per_lm = [_usage_cost(lm.history[m:]) for lm, m in zip(self.lms, self.marks)]
        total = Cost()
        for c in self.per_lm:
            total = total.add(c)
        total.seconds = seconds
        self.cost = total


# ----------------------------------------------------------------------------------------------------- a cell


@dataclass
class Settings:
    breadth: int
    depth: int
    init_temperature: float
    max_tokens: int
    proposal_max_tokens: int
    threads: int
    n_ctx: int
    cut: str
    cache: bool
    model: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)


def cell_name(task: str, seed: int) -> str:
    return f"{METHOD}-{task}-s{seed}"


def is_complete(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    need = ("cell", "method", "task", "seed", "sizes", "settings", "baseline", "dev_accuracy", "test_accuracy",
            "prompts", "cost", "test_predictions", "finished_at")
    return isinstance(data, dict) and all(k in data for k in need) and data.get("cell") == path.stem


def load_data(task: str, seed: int, data_dir: Path, cut: str) -> Any:
    from dlc.data import load_splits
    from dlc.errors import DlcError
    from dlc.ir import DataConfig

    cfg = DataConfig(task=task, train_size=SIZES["train"], dev_size=SIZES["dev"], test_size=SIZES["test"], cut=cut)  # type: ignore[arg-type]
    try:
        return load_splits(cfg, ("x",), seed=seed, data_dir=data_dir)
    except DlcError as e:
        raise Fatal(f"cannot load task '{task}': {e.message}" + (f" (hint: {e.hint})" if e.hint else "")) from None


def make_program(dspy: Any, instruction: str, labels: tuple[str, ...]) -> Any:
    """dspy.Predict(text -> label: Literal[labels]) inside a module that turns an unparseable answer into
    label=None (scored 0, as Evaluate would) and lets every other error through."""
    from dspy.utils.exceptions import AdapterParseError

    label_type = Literal[labels]  # type: ignore[valid-type]
    sig = dspy.Signature({"text": (str, dspy.InputField()), "label": (label_type, dspy.OutputField())},
                         instruction)

    class Classifier(dspy.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspy.Predict(sig)

        def forward(self, text: str) -> Any:
            try:
                return self.predict(text=text)
            except AdapterParseError as e:
                return dspy.Prediction(label=None, parse_error=" ".join(str(e).split())[:300])

    return Classifier()


def make_adapter(dspy: Any) -> Any:
    """DSPy's ChatAdapter, except that a COPRO *proposal* it cannot parse does not crash the whole optimisation.

    Stock COPRO raises (and loses every candidate scored so far) when one of the n sampled proposals misses a
    field marker, which a 1.5B model sometimes does at temperature 0.7. Here such a proposal becomes a candidate
    anyway: the text under its `proposed_instruction` marker if there is one, else the whole reply without
    markers; it is then scored like any other candidate. The task program's answers are parsed exactly as in
    stock DSPy (an unparseable answer still falls back to the JSONAdapter and then scores 0)."""
    import re

    from dspy.utils.exceptions import AdapterParseError

    def section(text: str, name: str) -> str | None:
        m = re.search(r"\[\[ ## " + re.escape(name) + r" ## \]\]\s*(.*?)(?=\[\[ ## |\Z)", text, re.S)
        return m.group(1).strip() if m else None

    class ProposalTolerantChatAdapter(dspy.ChatAdapter):  # type: ignore[misc, name-defined]
        fallbacks = 0

        def parse(self, signature: Any, completion: str) -> dict[str, Any]:
            try:
                return super().parse(signature, completion)
            except AdapterParseError:
                if "proposed_instruction" not in signature.output_fields:
                    raise
                type(self).fallbacks += 1
                instr = section(completion, "proposed_instruction")
                if instr is None:
                    instr = " ".join(re.sub(r"\[\[ ## [^\]]*? ## \]\]", " ", completion).split())
                return {"proposed_instruction": instr or "(empty proposal)",
                        "proposed_prefix_for_output_field": section(completion, "proposed_prefix_for_output_field")
                        or ""}

    return ProposalTolerantChatAdapter()


def evaluate(program: Any, examples: Sequence[Any], server: DlcServer) -> tuple[float, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    for ex in examples:
        server.check_alive()
        try:
            pred = program(text=ex.inputs["x"])
        except Exception as e:  # noqa: BLE001 - an LM error (not a parse error) means the cell cannot be trusted
            server.check_alive()
            raise Fatal(f"LM call failed on {ex.id}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
        label = getattr(pred, "label", None)
        row: dict[str, Any] = {"id": ex.id, "target": ex.target, "prediction": label, "correct": label == ex.target}
        if getattr(pred, "parse_error", None):
            row["parse_error"] = pred.parse_error
        rows.append(row)
    acc = sum(r["correct"] for r in rows) / len(rows) if rows else 0.0
    return acc, rows


def run_cell(dspy: Any, server: DlcServer, task: str, seed: int, data_dir: Path, s: Settings) -> dict[str, Any]:
    from dspy.teleprompt import COPRO

    from dlc.data.tasks import TASKS

    info = TASKS[task]
    labels = info.label_names
    if not labels:
        raise Fatal(f"task '{task}' has no labels: this baseline is for classification tasks")
    splits = load_data(task, seed, data_dir, s.cut)
    random.seed(seed)

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=s.cache)   # a fresh cache per cell
    common = dict(api_base=server.url, api_key="local", cache=s.cache, engine="litellm", num_retries=2,
                  timeout=600, seed=seed)
    task_lm = dspy.LM(f"openai/{server.name}", temperature=0.0, max_tokens=s.max_tokens, **common)
    prompt_lm = dspy.LM(f"openai/{server.name}", temperature=s.init_temperature, max_tokens=s.proposal_max_tokens,
                        **common)
    # max_errors=1: COPRO's Evaluate stops at the first real LM error (a parse error is not one: see make_program)
    adapter = make_adapter(dspy)
    dspy.configure(lm=task_lm, adapter=adapter, max_errors=1)

    trainset = [dspy.Example(text=ex.inputs["x"], label=ex.target).with_inputs("text") for ex in splits.train]

    scored: list[float] = []
    unparseable = [0]

    def metric(example: Any, pred: Any, trace: Any = None) -> float:
        score = float(getattr(pred, "label", None) == example.label)
        unparseable[0] += bool(getattr(pred, "parse_error", None))
        scored.append(score)
        if len(scored) % len(trainset) == 0:   # one candidate instruction scored on the whole trainset
            print(f"[{cell_name(task, seed)}]   candidate {len(scored) // len(trainset)}: train "
                  f"{sum(scored[-len(trainset):]) / len(trainset):.3f}", file=sys.stderr, flush=True)
        return score

    program = make_program(dspy, info.instruction, labels)
    t_cell = time.monotonic()
    print(f"[{cell_name(task, seed)}] baseline eval on dev {len(splits.dev)} + test {len(splits.test)}", flush=True)
    with Meter(task_lm, prompt_lm) as m_base:
        base_dev, base_dev_rows = evaluate(program, splits.dev, server)
        base_test, base_rows = evaluate(program, splits.test, server)
    m_base.cost.unparseable = sum("parse_error" in r for r in base_dev_rows + base_rows)
    print(f"[{cell_name(task, seed)}] baseline dev {base_dev:.3f} test {base_test:.3f} "
          f"({m_base.cost.seconds:.0f} s); COPRO breadth {s.breadth} depth {s.depth} on train {len(trainset)}",
          flush=True)

    copro = COPRO(prompt_model=prompt_lm, metric=metric, breadth=s.breadth, depth=s.depth,
                  init_temperature=s.init_temperature, track_stats=True)
    # COPRO passes eval_kwargs both to Evaluate() and to each Evaluate call: only keys both accept
    eval_kwargs = dict(num_threads=1, display_progress=False, display_table=0)
    # COPRO prints the prompt model's history (inspect_history inside a debug f-string): keep it in a log
    copro_log = CACHE_ROOT / f"{cell_name(task, seed)}.copro.log"
    copro_log.parent.mkdir(parents=True, exist_ok=True)
    with Meter(task_lm, prompt_lm) as m_opt, open(copro_log, "w") as log, contextlib.redirect_stdout(log):
        try:
            best = copro.compile(program, trainset=trainset, eval_kwargs=eval_kwargs)
        except Fatal:
            raise
        except Exception as e:  # noqa: BLE001
            server.check_alive()
            raise Fatal(f"COPRO failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    m_opt.cost.unparseable = unparseable[0]
    instruction = best.predict.signature.instructions
    *_, out_key = best.predict.signature.fields.keys()
    prefix = best.predict.signature.fields[out_key].json_schema_extra.get("prefix")
    candidates = [{"score": c["score"], "depth": c["depth"], "instruction": c["instruction"], "prefix": c["prefix"]}
                  for c in getattr(best, "candidate_programs", [])]
    print(f"[{cell_name(task, seed)}] COPRO done in {m_opt.cost.seconds:.0f} s, best train score "
          f"{candidates[0]['score'] if candidates else '?'}: {instruction!r}", flush=True)

    with Meter(task_lm, prompt_lm) as m_final:
        dev_acc, dev_rows = evaluate(best, splits.dev, server)
        test_acc, test_rows = evaluate(best, splits.test, server)
    m_final.cost.unparseable = sum("parse_error" in r for r in dev_rows + test_rows)
    wall = time.monotonic() - t_cell
    print(f"[{cell_name(task, seed)}] optimized dev {dev_acc:.3f} test {test_acc:.3f} ({m_final.cost.seconds:.0f} s)",
          flush=True)

    total = m_base.cost.add(m_opt.cost).add(m_final.cost)
    proposals = m_opt.per_lm[1].to_json()
    proposals.pop("seconds")                       # not timed apart from the candidates' scoring
    import importlib.metadata as md

    return {
        "cell": cell_name(task, seed), "method": METHOD, "task": task, "seed": seed,
        "sizes": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test)},
        "settings": {
            "breadth": s.breadth, "depth": s.depth, "init_temperature": s.init_temperature,
            "dspy": md.version("dspy"), "litellm": md.version("litellm"),
            "model": s.model, "served_model": server.name, "model_id": server.model_id,
            "endpoint": "/v1/chat/completions", "engine": "litellm",
            "adapter": "ChatAdapter (JSONAdapter fallback; unparseable COPRO proposals kept as text)", "temperature": 0.0, "max_tokens": s.max_tokens,
            "proposal_max_tokens": s.proposal_max_tokens, "dlc_threads": s.threads, "n_ctx": s.n_ctx,
            "cut": s.cut, "cache": "memory, per cell" if s.cache else "off", "num_threads": 1,
            "initial_instruction": info.instruction, "labels": list(labels), **s.extra,
        },
        "baseline": {"dev_accuracy": base_dev, "test_accuracy": base_test, "test_predictions": base_rows},
        "dev_accuracy": dev_acc, "test_accuracy": test_acc,
        "prompts": {"y": instruction},
        "prompt_prefix": prefix,
        "proposal_parse_fallbacks": type(adapter).fallbacks,
        "candidates": candidates,
        "cost": {
            "calls": total.calls, "prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens,
            "cache_hits": total.cache_hits, "wall_seconds": round(wall, 2),
            "optimize_seconds": round(m_opt.cost.seconds, 2),
            "eval_seconds": round(m_base.cost.seconds + m_final.cost.seconds, 2),
            "phases": {"baseline_eval": m_base.cost.to_json(), "optimize": m_opt.cost.to_json(),
                       "optimize_proposals": proposals, "final_eval": m_final.cost.to_json()},
            "server": {"counters": None, "note": "dlc serve has no counters; tokens are the usage it returns",
                       "start_seconds": round(server.start_seconds, 2)},
        },
        "test_predictions": test_rows,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------------------------------------- main


def default_data_dir() -> str:
    return os.environ.get("DLC_DATA_DIR") or str((REPO / ".." / "shared" / "data").resolve())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="DSPy COPRO baseline against `dlc serve` (one JSON file per cell).")
    ap.add_argument("--tasks", default="trec,subj", help="comma-separated built-in tasks (default: %(default)s)")
    ap.add_argument("--seeds", default="42", help="comma-separated seeds (default: %(default)s)")
    ap.add_argument("--breadth", type=int, default=3, help="COPRO breadth (default: %(default)s)")
    ap.add_argument("--depth", type=int, default=2, help="COPRO depth (default: %(default)s)")
    ap.add_argument("--init-temperature", type=float, default=0.7,
                    help="temperature of COPRO's proposals (default: %(default)s)")
    ap.add_argument("--data-dir", default=default_data_dir(),
                    help="data dir (default: $DLC_DATA_DIR, else ../shared/data from the repo)")
    ap.add_argument("--model", default="default", help="dlc serve --model (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="DLC_THREADS of the server (default: %(default)s)")
    ap.add_argument("--n-ctx", type=int, default=4096, help="dlc serve --n-ctx (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=48, help="max tokens of a task answer (default: %(default)s)")
    ap.add_argument("--proposal-max-tokens", type=int, default=256,
                    help="max tokens of one COPRO proposal (default: %(default)s)")
    ap.add_argument("--cut", choices=("first", "balanced"), default="first",
                    help="size cut of the splits, as DataConfig.cut (default: %(default)s, the harness's)")
    ap.add_argument("--no-cache", action="store_true", help="no DSPy cache at all (default: in-memory, per cell)")
    ap.add_argument("--out-dir", default=str(DEFAULT_OUT), help="where cell files go (default: bench/cells)")
    ap.add_argument("--force", action="store_true", help="rerun cells whose file is already complete")
    ap.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for dlc serve")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.model != "default":
        print("note: --model is not 'default': cells will not be comparable to the DLN cells", file=sys.stderr)
    try:
        import dspy
    except ImportError:
        raise Fatal("dspy is not installed: pip install dspy") from None
    try:
        from dlc.data.tasks import TASKS
        from dlc.fsutil import atomic_write_text
    except ImportError as e:
        raise Fatal(f"dlc is not importable ({e}): pip install -e . in the repo") from None
    import logging

    logging.getLogger("dspy").setLevel(logging.ERROR)
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)

    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    try:
        seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    except ValueError:
        raise Fatal(f"--seeds must be comma-separated integers, got '{a.seeds}'") from None
    for t in tasks:
        if t not in TASKS:
            raise Fatal(f"unknown task '{t}' (built-in tasks: {', '.join(TASKS)})")
    if a.breadth < 2 or a.depth < 1:
        raise Fatal("COPRO needs --breadth >= 2 and --depth >= 1")
    data_dir = Path(a.data_dir).expanduser()
    if not data_dir.is_dir():
        raise Fatal(f"data dir {data_dir} does not exist (pass --data-dir or set $DLC_DATA_DIR)")
    out_dir = Path(a.out_dir)
    settings = Settings(breadth=a.breadth, depth=a.depth, init_temperature=a.init_temperature,
                        max_tokens=a.max_tokens, proposal_max_tokens=a.proposal_max_tokens, threads=a.threads,
                        n_ctx=a.n_ctx, cut=a.cut, cache=not a.no_cache, model=a.model)

    todo: list[tuple[str, int, Path]] = []
    for t in tasks:
        for sd in seeds:
            path = out_dir / f"{cell_name(t, sd)}.json"
            if is_complete(path) and not a.force:
                print(f"[{cell_name(t, sd)}] complete, skipped ({path})", flush=True)
            else:
                todo.append((t, sd, path))
    if not todo:
        return 0

    server = DlcServer(a.model, threads=a.threads, n_ctx=a.n_ctx, log_path=CACHE_ROOT / "dlc-serve.log",
                       start_timeout=a.start_timeout)

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        print(f"starting dlc serve --model {a.model} (DLC_THREADS={a.threads})", flush=True)
        url = server.start()
        print(f"dlc serve: {url} model '{server.name}' ready in {server.start_seconds:.1f} s", flush=True)
        for t, sd, path in todo:
            result = run_cell(dspy, server, t, sd, data_dir, settings)
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
            c = result["cost"]
            print(f"[{result['cell']}] dev {result['baseline']['dev_accuracy']:.3f} -> {result['dev_accuracy']:.3f}  "
                  f"test {result['baseline']['test_accuracy']:.3f} -> {result['test_accuracy']:.3f}  "
                  f"{c['calls']} calls, {c['prompt_tokens']:,} prompt + {c['completion_tokens']:,} completion "
                  f"tokens, {c['cache_hits']} cache hits, {c['wall_seconds']:.0f} s -> {path}", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fatal as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted (the server was stopped; finished cells are kept)", file=sys.stderr)
        sys.exit(130)

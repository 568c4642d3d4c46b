"""The library façade of dlc's product commands: `fit`, `evaluate_targets`, `run_inference`, `list_runs`.

The CLI modules (`dlc/commands/{fit,eval,run,runs}.py`) only parse arguments and call these functions, so every
command is also a plain Python call (dbt's `dbtRunner().invoke` idea) and is tested without a shell.

Ordering rule of `fit`: everything that can fail because of user input (the network, the overrides, the data
directory, the task, the field mapping, the model) is checked *before* the run directory is created, and a resume
is validated before anything in the run directory is touched — so a user mistake never leaves or overwrites state.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

from dlc import __version__
from dlc.errors import DlcArtifactError, DlcError, DlcUsageError
from dlc.ir import Example, Graph, ModelConfig
from dlc.lm.base import LM, Usage
from dlc.rundir import (BACKEND, CONFIG, CONFIG_SCHEMA, GRAPH, RESULT, RESULT_SCHEMA, SOURCE, RunDir,
                        canonical_sha256, check_resumable)

ENV_SCRIPTED = "DLC_TEST_SCRIPTED_LM"          # "1": every model is the deterministic scripted LM (tests only)
ENV_SCRIPTED_DELAY = "DLC_TEST_SCRIPTED_DELAY"  # seconds slept per scripted batch call (lets tests kill mid-iteration)
USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens", "cache_hits")


# ------------------------------------------------------------------------------------------------ --set

def parse_sets(items: Iterable[str] | None) -> dict[str, str]:
    """`--set block.key=value` strings -> {"block.key": "value"} (validated and typed by the compiler).

    A later --set of the same key wins, like repeated command-line flags."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DlcUsageError(f"--set '{item}' is not BLOCK.KEY=VALUE", code="E110",
                                hint="e.g. --set fit.iters=4 --set data.task=navigate")
        if "." not in key or key.startswith(".") or key.endswith("."):
            raise DlcUsageError(f"--set '{item}': the key must be a dotted path BLOCK.KEY", code="E110",
                                hint="e.g. fit.iters, fit.batch_size, data.task, data.train_size")
        out[key] = value.strip()
    return out


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """`--seeds 13,42,25` -> (13, 42, 25)."""
    if text is None or not text.strip():
        return ()
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise DlcUsageError(f"--seeds '{text}' is not a comma-separated list of integers", code="E111",
                            hint="e.g. --seeds 13,42,25") from None
    if len(set(seeds)) != len(seeds):
        raise DlcUsageError(f"--seeds '{text}' repeats a seed", code="E111")
    return seeds


# ------------------------------------------------------------------------------------------------ networks

@dataclass
class Network:
    """A compiled graph plus where it came from (for `<net>.fit.dln` and the run's provenance)."""

    graph: Graph
    name: str                        # the net's file stem (runs/<name>-<timestamp>, <name>.fit.dln)
    source_text: str | None = None   # the .dln text, when known
    source_path: str | None = None
    artifact_path: str | None = None


def _stem(path: str) -> str:
    name = Path(path).name
    for suf in (".fit.dln", ".dln", ".json"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return Path(path).stem


def _read_source(graph: Graph) -> str | None:
    """The .dln text a graph was compiled from, if the file still has the hash recorded at compile time."""
    p = graph.source_path
    if not p or not Path(p).is_file():
        return None
    text = Path(p).read_text(encoding="utf-8")
    if graph.source_sha256 and hashlib.sha256(text.encode("utf-8")).hexdigest() != graph.source_sha256:
        return None
    return text


def load_network(target: str | None, overrides: Mapping[str, str] | None = None) -> Network:
    """`net.dln` (compiled now), a compiled `.json` artifact, a run directory (its graph with its learned
    prompts), or None (the last `dlc compile`, via `.dlc/LAST`)."""
    from dlc import compiler, manifest

    overrides = dict(overrides or {})
    if target is None:
        last = manifest.find_last()
        if last is None:
            raise DlcUsageError("no network given and nothing compiled yet", code="E120",
                                hint="run `dlc compile net.dln` first, or pass the .dln file: `dlc fit net.dln`")
        target = str(last)
    p = Path(target)
    if p.is_dir():
        run = RunDir.open(p)
        graph = graph_of_run(run, prompts="learned")
        cfg = run.config()
        source = run.source_text()
        if overrides:
            if source is None:
                raise DlcUsageError(f"--set needs the run's .dln source, and {run.path} has none", code="E101")
            learned = graph.prompts()
            graph = with_prompts(compiler.compile_source(source, cfg.get("source_path") or str(run.file(SOURCE)),
                                                         overrides), learned)
        return Network(graph, cfg.get("net") or graph.name, source, cfg.get("source_path"), None)
    if not p.exists():
        raise DlcUsageError(f"{target}: no such file", code="E121",
                            hint="pass a .dln file, a compiled .json artifact or a run directory")
    if p.suffix == ".json":
        graph = manifest.read(p)
        if overrides:
            raise DlcUsageError("--set applies to .dln sources, not to a compiled artifact", code="E101",
                                hint=f"pass the .dln file instead ({graph.source_path or 'its source'})")
        return Network(graph, _stem(graph.source_path or str(p)), _read_source(graph), graph.source_path, str(p))
    graph = compiler.compile_file(str(p), overrides)
    return Network(graph, _stem(str(p)), p.read_text(encoding="utf-8"), str(p), None)


def graph_of_run(run: RunDir, *, prompts: str = "learned") -> Graph:
    """The graph a run trained, verified against the hash recorded when it started; with prompts="learned" the
    prompts are the run's result (or, for an unfinished run, its best prompts so far)."""
    from dlc import manifest

    cfg = run.config()
    try:
        graph = manifest.from_json(run.graph_json())
    except DlcError as e:
        raise DlcArtifactError(f"corrupted run directory: {run.path / GRAPH}: {e.message}", code="E502") from None
    if graph_identity(graph) != cfg.get("graph_sha256"):
        raise DlcArtifactError(f"corrupted run directory: {run.path / GRAPH} does not match the hash in {CONFIG}",
                               code="E502", hint="the artifact was edited; start a new run with `dlc fit`")
    if prompts == "learned":
        res = run.result()
        learned = (res or {}).get("prompts")
        if learned is None:
            ck = run.checkpoint()
            learned = ((ck or {}).get("state") or {}).get("best_prompts") or None
        if learned:
            graph = with_prompts(graph, learned)
    return graph


def with_prompts(graph: Graph, prompts: Mapping[str, str]) -> Graph:
    layers = dict(graph.layers)
    for node, text in prompts.items():
        if node in layers:
            layers[node] = dataclasses.replace(layers[node], prompt=text)
    return dataclasses.replace(graph, layers=layers)


def graph_identity(graph: Graph) -> str:
    """sha256 of the network itself (layers, templates, prompts, inputs, output, metric), excluding the fit/data/
    model blocks (hashed separately by `config_identity`, so a resume can say *which* one changed) and provenance."""
    from dlc import manifest

    doc = manifest.to_json(graph)
    for k in ("generated_at", "dlc_version", "source", "models", "fit", "data"):
        doc.pop(k, None)
    for node in doc.get("nodes", {}).values():
        node.pop("span", None)          # comments/layout edits do not change the network
    for t in doc.get("templates", {}).values():
        t.pop("path", None)             # a built-in template moves with the installation; its text is what counts
    return canonical_sha256(doc)


def resolved_config(graph: Graph) -> dict[str, Any]:
    """The fit, data and model blocks as plain JSON (data_dir excluded: it is where the files are, not what)."""
    data = dataclasses.asdict(graph.data)
    data.pop("data_dir", None)
    return {"fit": _jsonable(dataclasses.asdict(graph.fit)), "data": _jsonable(data),
            "models": {k: _jsonable(dataclasses.asdict(v)) for k, v in sorted(graph.models.items())}}


def config_identity(graph: Graph) -> str:
    return canonical_sha256(resolved_config(graph))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------------ models

def _model_key(cfg: ModelConfig) -> str:
    d = dataclasses.asdict(cfg)
    d.pop("name", None)
    return canonical_sha256(_jsonable(d))


def _scripted_lm(cfg: ModelConfig) -> LM:
    """The deterministic scripted LM (tests of the product around the engine: resume, exit codes, reports)."""
    from dlc.lm.scripted import ScriptedLM

    lm = ScriptedLM(model_id=f"scripted:{cfg.model}")
    delay = float(os.environ.get(ENV_SCRIPTED_DELAY, "0") or 0)
    if delay > 0:
        gen, score = lm.generate, lm.score

        def slow_generate(reqs):  # type: ignore[no-untyped-def]
            time.sleep(delay)
            return gen(reqs)

        def slow_score(reqs):  # type: ignore[no-untyped-def]
            time.sleep(delay)
            return score(reqs)

        lm.generate, lm.score = slow_generate, slow_score  # type: ignore[method-assign]
    return lm


def open_lms(graph: Graph, *, no_cache: bool = False, cache_dir: str | None = None) -> dict[str, LM]:
    """One LM per distinct model configuration (two names for the same weights share one loaded model), mapped
    from every model name the graph uses."""
    names = set(graph.models) | {graph.layers[n].model for n in graph.order} | \
        {graph.layers[n].backward_model for n in graph.order}
    by_key: dict[str, LM] = {}
    lms: dict[str, LM] = {}
    for name in sorted(names):
        cfg = graph.models.get(name) or ModelConfig(name=name)
        key = _model_key(cfg)
        if key not in by_key:
            if os.environ.get(ENV_SCRIPTED) == "1":
                by_key[key] = _scripted_lm(cfg)
            else:
                from dlc.lm.registry import open_lm

                by_key[key] = open_lm(cfg, cache_dir=cache_dir, no_cache=no_cache)
        lms[name] = by_key[key]
    return lms


def unique_lms(lms: Mapping[str, LM]) -> list[LM]:
    seen: dict[int, LM] = {}
    for lm in lms.values():
        seen.setdefault(id(lm), lm)
    return list(seen.values())


def close_lms(lms: Mapping[str, LM]) -> None:
    for lm in unique_lms(lms):
        try:
            lm.close()
        except Exception:  # closing is best effort; a failure here must not hide the run's result
            pass


def usage_totals(lms: Mapping[str, LM], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Usage summed over the distinct LMs, plus `base` (what earlier processes of a resumed run spent)."""
    tot = {k: int((base or {}).get(k, 0) or 0) for k in USAGE_KEYS}
    per_model: dict[str, dict[str, int]] = {m: dict(v) for m, v in ((base or {}).get("per_model") or {}).items()}
    for lm in unique_lms(lms):
        u: Usage = lm.usage
        row = per_model.setdefault(lm.model_id, {k: 0 for k in USAGE_KEYS})
        for k in USAGE_KEYS:
            v = int(getattr(u, k, 0) or 0)
            tot[k] += v
            row[k] = row.get(k, 0) + v
    tot["per_model"] = per_model
    # what local backends really computed (bench/ cost columns); absent for remote-only runs
    base_work = (base or {}).get("backend") or {}
    works = [w() for w in (getattr(lm, "work", None) for lm in unique_lms(lms)) if callable(w)]
    if works or base_work:
        uniques = [w.unique_tokens for w in works]
        tracked = all(u is not None for u in uniques) and (not base_work or base_work.get("unique_tokens") is not None)
        tot["backend"] = {
            "decoded_tokens": int(base_work.get("decoded_tokens", 0)) + sum(w.decoded_tokens for w in works),
            # a resumed run sums the processes' tries: an upper bound of the true minimum
            "unique_tokens": (int(base_work.get("unique_tokens") or 0) + sum(u or 0 for u in uniques)) if tracked
            else None,
            "seconds": round(float(base_work.get("seconds", 0.0)) + sum(w.seconds for w in works), 3),
            "decode_seconds": round(float(base_work.get("decode_seconds", 0.0))
                                    + sum(w.decode_seconds for w in works), 3),
        }
    return tot


def backend_info(graph: Graph, lms: Mapping[str, LM]) -> dict[str, Any]:
    out = {}
    for name, lm in sorted(lms.items()):
        cfg = graph.models.get(name) or ModelConfig(name=name)
        out[name] = {"backend": "scripted" if os.environ.get(ENV_SCRIPTED) == "1" else cfg.backend,
                     "model": cfg.model, "model_id": lm.model_id,
                     "capabilities": dataclasses.asdict(lm.capabilities)}
    return out


# ------------------------------------------------------------------------------------------------ data

def load_data(graph: Graph, data_dir: str | None) -> Any:
    """The run's splits (dlc.data.load_splits); `data_dir` (--data-dir) wins over the data block's."""
    from dlc.data import load_splits

    return load_splits(graph.data, graph.inputs, seed=graph.fit.seed, data_dir=data_dir or None)


def split_fingerprint(examples: Sequence[Example]) -> str:
    return canonical_sha256([[e.id, dict(sorted(e.inputs.items())), e.target] for e in examples])


def data_identity(splits: Any) -> dict[str, Any]:
    return {name: {"n": len(getattr(splits, name)), "sha256": split_fingerprint(getattr(splits, name))}
            for name in ("train", "dev", "test")}


# ------------------------------------------------------------------------------------------------ fit

@dataclass
class FitOutcome:
    run_dir: Path | None
    result: dict[str, Any] | None
    plan: dict[str, Any]
    fit_dln: Path | None = None
    interrupted: bool = False


def _print(out: TextIO | None, *args: Any) -> None:
    if out is not None:
        print(*args, file=out, flush=True)


def format_plan(plan: Mapping[str, Any], indent: int = 0) -> str:
    """The engine's cost plan (dlc.trainer.plan) as the table `dlc fit` prints before starting."""
    pad = "  " * indent
    if "per_iteration" not in plan:   # an unknown shape: plain nested key: value lines
        lines = []
        for k, v in plan.items():
            if isinstance(v, Mapping):
                lines += [f"{pad}{k}:", format_plan(v, indent + 1)]
            else:
                lines.append(f"{pad}{k}: {v}")
        return "\n".join(lines)
    per = plan.get("per_iteration") or {}
    val = plan.get("per_validation") or {}
    w = max([len(k) for k in list(per) + list(val)] + [10])
    if not plan.get("iterations"):      # iters = 0: an evaluation of the initial prompts (0-shot / n-shot)
        lines = [f"{pad}no training iterations: the initial prompts are evaluated as they are"]
    else:
        lines = [f"{pad}{plan.get('iterations')} training iteration(s), batch {plan.get('batch_size')}, "
                 f"trained layers: {', '.join(plan.get('trained_layers') or []) or '(none)'}",
                 f"{pad}LLM requests per training iteration (exact upper bound; duplicates are sent once): "
                 f"{plan.get('per_iteration_total', sum(per.values())):,}"]
        lines += [f"{pad}  {k:<{w}} {v:>9,}" for k, v in per.items()]
        if "max_completion_tokens_per_iteration" in plan:
            lines.append(f"{pad}  {'completion tokens at most':<{w}} "
                         f"{plan['max_completion_tokens_per_iteration']:>9,}")
    lines.append(f"{pad}LLM requests per validation on dev: {sum(val.values()):,} "
                 f"({plan.get('validations', '?')} validation(s))")
    lines += [f"{pad}  {k:<{w}} {v:>9,}" for k, v in val.items()]
    lines.append(f"{pad}total LLM requests at most: {plan.get('total_requests', 0):,} "
                 "(+ the final dev/test evaluations)")
    return "\n".join(lines)


def fit(target: str | None = None, *, overrides: Mapping[str, str] | None = None, run_dir: str | None = None,
        runs_root: str = "runs", resume: str | None = None, dry_run: bool = False, no_cache: bool = False,
        cache_dir: str | None = None, data_dir: str | None = None, out: TextIO | None = sys.stdout,
        err: TextIO | None = sys.stderr, progress: bool | None = None, argv: Sequence[str] = ()) -> FitOutcome:
    """Train a network's prompts; see the module docstring for the order of checks and rundir.py for the files.

    Raises DlcError for user mistakes and KeyboardInterrupt (after the last clean checkpoint) on Ctrl-C."""
    from dlc import trainer as tr

    overrides = dict(overrides or {})
    run: RunDir | None = None
    ck: dict[str, Any] | None = None
    if resume is not None:
        if run_dir is not None:
            raise DlcUsageError("--resume and --run-dir cannot be combined", code="E112",
                                hint="--resume RUN continues the run in RUN")
        run = RunDir.open(resume)
        base_cfg = run.config()
        given = None
        if target is not None:
            given = load_network(target, overrides)
        elif overrides:
            # `--resume RUN --set k=v`: the run's own source with its original overrides plus the new ones
            from dlc import compiler

            src = run.source_text()
            if src is None:
                raise DlcUsageError(f"--set needs the run's .dln source, and {run.path} has none", code="E101")
            merged = {**(base_cfg.get("overrides") or {}), **overrides}
            g = compiler.compile_source(src, base_cfg.get("source_path") or str(run.file(SOURCE)), merged)
            given = Network(g, base_cfg.get("net") or g.name, src, base_cfg.get("source_path"))
        if given is not None:
            # what the user named must be the run's network and config (compare before anything is written)
            check_resumable(run, graph_sha256=graph_identity(given.graph),
                            config_sha256=config_identity(given.graph))
        cfg = check_resumable(run, graph_sha256=None, config_sha256=None)
        graph = graph_of_run(run, prompts="initial")
        if config_identity(graph) != cfg["config_sha256"]:
            raise DlcArtifactError(f"corrupted run directory: {run.path / GRAPH} does not match the config hash",
                                   code="E502")
        net = Network(graph, base_cfg.get("net") or graph.name, run.source_text(), base_cfg.get("source_path"))
        ck = run.checkpoint()
        data_dir = data_dir or base_cfg.get("data_dir")
    else:
        net = load_network(target, overrides)
        graph = net.graph
    splits = load_data(graph, data_dir)
    if resume is not None and run is not None:
        now = data_identity(splits)
        if now != run.config().get("data_identity"):
            raise DlcArtifactError(f"cannot resume {run.path}: the dataset splits differ from the ones the run "
                                   "started with", code="E505",
                                   hint="pass the --data-dir the run used, or start a new run")
    plan = tr.plan(graph, graph.fit, len(splits.train), len(splits.dev))
    _print(out, f"network {graph.name}: {len(graph.order)} layer(s) {', '.join(graph.order)}; output {graph.output}")
    _print(out, f"data: train {len(splits.train)}, dev {len(splits.dev)}, test {len(splits.test)}")
    _print(out, "plan:")
    _print(out, format_plan(plan, 1))
    if dry_run:
        _print(out, "dry run: nothing was trained, no run directory was created")
        return FitOutcome(None, None, plan)

    if run is not None and run.is_finished():
        res = run.result()
        _print(out, f"{run.path} already finished: dev {res.get('dev_accuracy')}, test {res.get('test_accuracy')}")
        return FitOutcome(run.path, res, plan)

    lms = open_lms(graph, no_cache=no_cache, cache_dir=cache_dir)
    try:
        if run is None:
            run = RunDir.create(net.name, root=runs_root, explicit=run_dir)
            _start_run(run, net, graph, splits, lms, overrides, data_dir, argv)
            _print(out, f"run directory: {run.path}")
        else:
            _print(out, f"resuming {run.path} after iteration {ck['iteration'] if ck else 0}")
        with run.lock():
            return _train(run, net, graph, splits, lms, ck, plan, out=out, err=err, progress=progress)
    finally:
        close_lms(lms)


def _start_run(run: RunDir, net: Network, graph: Graph, splits: Any, lms: Mapping[str, LM],
               overrides: Mapping[str, str], data_dir: str | None, argv: Sequence[str]) -> None:
    from dlc import manifest

    if net.source_text is not None:
        run.write_text(SOURCE, net.source_text)
    run.write_json(GRAPH, manifest.to_json(graph))
    run.write_json(BACKEND, backend_info(graph, lms))
    info = getattr(getattr(splits, "info", None), "name", None)
    run.write_json(CONFIG, {
        "schema": CONFIG_SCHEMA, "net": net.name, "graph_name": graph.name, "dlc_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source_path": net.source_path, "artifact_path": net.artifact_path, "overrides": dict(overrides),
        "seed": graph.fit.seed, "data_dir": str(data_dir) if data_dir else None, "argv": list(argv),
        "graph_sha256": graph_identity(graph), "config_sha256": config_identity(graph),
        "data_identity": data_identity(splits), "task": info, **resolved_config(graph),
    })


def _dev_of(rec: Mapping[str, Any]) -> float | None:
    v = rec.get("dev", rec.get("dev_accuracy"))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _train(run: RunDir, net: Network, graph: Graph, splits: Any, lms: Mapping[str, LM],
           ck: dict[str, Any] | None, plan: Mapping[str, Any], *, out: TextIO | None, err: TextIO | None,
           progress: bool | None) -> FitOutcome:
    from dlc import trainer as tr
    from dlc.progress import FitProgress

    cfg = run.config()
    state = None
    base_usage: dict[str, Any] = {}
    if ck is not None:
        run.truncate_trace(ck["trace_records"])
        state = tr.TrainState.from_json(ck["state"])
        base_usage = ck.get("usage") or {}
    else:
        run.truncate_trace(0)
    trainer = tr.Trainer(graph, lms, splits.train, splits.dev, graph.fit, state=state)
    t_start, base_wall = time.perf_counter(), float(base_usage.get("wall_seconds", 0.0) or 0.0)

    def totals() -> dict[str, Any]:
        """Usage so far, with the wall time of training (all processes of a resumed run, model loading excluded)."""
        u = usage_totals(lms, base_usage)
        u["wall_seconds"] = round(base_wall + time.perf_counter() - t_start, 3)
        return u

    n_records = len(run.trace())
    total = graph.fit.iters + 1          # iterations 0..iters; the last one only validates (trainer.py)
    best = None
    for rec in run.trace():
        d = _dev_of(rec)
        if d is not None:
            best = d if best is None else max(best, d)
    live = progress if progress is not None else None
    try:
        with FitProgress(total, completed=len(trainer.state.history), description=net.name,
                         stream=err, live=live) as bar:
            while not trainer.finished():
                rec = trainer.step()
                usage = totals()
                rec = dict(rec)
                rec.setdefault("tokens", usage["prompt_tokens"] + usage["completion_tokens"])
                run.append_trace(rec)
                n_records += 1
                run.write_checkpoint(iteration=trainer.state.iteration, state=trainer.state.to_json(),
                                     usage=usage, trace_records=n_records, graph_sha256=cfg["graph_sha256"],
                                     config_sha256=cfg["config_sha256"])
                d = _dev_of(rec)
                if d is not None:
                    best = d if best is None else max(best, d)
                bar.update(len(trainer.state.history), dev_accuracy=d, best_dev=best,
                           tokens=usage["prompt_tokens"] + usage["completion_tokens"])
    except KeyboardInterrupt:
        _print(err, f"\ninterrupted: the last checkpoint ({run.path / 'checkpoint.json'}) is intact; "
                    f"continue with `dlc fit --resume {run.path}`")
        raise
    result = _finish(run, net, graph, splits, lms, trainer, totals)
    fit_dln = run.path / f"{net.name}.fit.dln"
    _print(out, f"dev accuracy  {_fmt(result['baseline']['dev_accuracy'])} -> {_fmt(result['dev_accuracy'])}")
    _print(out, f"test accuracy {_fmt(result['baseline']['test_accuracy'])} -> {_fmt(result['test_accuracy'])}")
    u = result["usage"]
    _print(out, f"usage: {u['calls']:,} calls, {u['prompt_tokens']:,} prompt + {u['completion_tokens']:,} "
                f"completion tokens, {u['cache_hits']:,} cache hits")
    _print(out, f"result: {run.path / RESULT}")
    if fit_dln.exists():
        _print(out, f"learned network: {fit_dln}")
    return FitOutcome(run.path, result, dict(plan), fit_dln if fit_dln.exists() else None)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def _evaluate(graph: Graph, prompts: Mapping[str, str], lms: Mapping[str, LM], examples: Sequence[Example],
              *, shots_from: Sequence[Example] = (), seed: int = 0) -> Any:
    from dlc import trainer as tr

    if not examples:
        return None
    return tr.evaluate(graph, dict(prompts), lms, list(examples), n_shots=graph.fit.n_shots,
                       shots_from=tuple(shots_from), seed=seed)


def _finish(run: RunDir, net: Network, graph: Graph, splits: Any, lms: Mapping[str, LM], trainer: Any,
            totals: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Final evaluation with the best prompts (and, for the gain, the initial ones), `.fit.dln`, result.json."""
    from dlc.report import classification_report

    state = trainer.state
    best = dict(getattr(state, "best_prompts", None) or state.prompts)
    initial = graph.prompts()
    evals: dict[str, Any] = {}
    for tag, prompts in (("baseline", initial), ("final", best)):
        for split in ("dev", "test"):
            evals[(tag, split)] = _evaluate(graph, prompts, lms, getattr(splits, split), shots_from=splits.train,
                                            seed=graph.fit.seed)
    labels = graph.layers[graph.output].output.label_names

    def acc(tag: str, split: str) -> float | None:
        r = evals[(tag, split)]
        return None if r is None else float(r.accuracy)

    def details(split: str) -> dict[str, Any] | None:
        r = evals[("final", split)]
        if r is None:
            return None
        return classification_report(list(r.targets), list(r.predictions), labels).to_json()

    def predictions(split: str) -> dict[str, Any] | None:
        """Per example, before and after training: a paired comparison needs the same ids on both sides."""
        b, f = evals[("baseline", split)], evals[("final", split)]
        if b is None or f is None:
            return None
        return {"ids": list(f.ids), "targets": list(f.targets), "baseline": list(b.predictions),
                "final": list(f.predictions)}

    fit_dln = None
    if net.source_text is not None:
        from dlc import compiler

        changed = {k: v for k, v in best.items() if v != initial.get(k)}   # untouched prompts keep their quoting
        text = compiler.rewrite_prompts(net.source_text, net.source_path or f"{net.name}.dln", changed)
        fit_dln = run.path / f"{net.name}.fit.dln"
        run.write_text(fit_dln.name, text)
    usage = totals()
    result = {
        "schema": RESULT_SCHEMA, "net": net.name, "seed": graph.fit.seed,
        "dev_accuracy": acc("final", "dev"), "test_accuracy": acc("final", "test"),
        "baseline": {"dev_accuracy": acc("baseline", "dev"), "test_accuracy": acc("baseline", "test"),
                     "prompts": initial},
        "prompts": best, "iterations": state.iteration,
        "best_dev_during_training": getattr(state, "best_dev", None),
        "usage": usage, "dev": details("dev"), "test": details("test"),
        "predictions": {"dev": predictions("dev"), "test": predictions("test")},
        "fit_dln": str(fit_dln) if fit_dln else None,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    run.write_json(RESULT, result)
    return result


# ------------------------------------------------------------------------------------------------ eval

@dataclass
class EvalReport:
    split: str
    seeds: tuple[int, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)   # one per (target, seed)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "seeds": list(self.seeds), "rows": self.rows, "summary": self.summary}


def evaluate_targets(targets: Sequence[str], *, split: str = "test", seeds: Sequence[int] = (),
                     data_dir: str | None = None, no_cache: bool = False, cache_dir: str | None = None,
                     overrides: Mapping[str, str] | None = None) -> EvalReport:
    """Evaluate runs (their learned prompts) or networks (their prompts, e.g. a `.fit.dln`) on a split.

    Each (target, seed) is one evaluation; the summary is mean ± 95% t-interval over them (paper §5 reporting).
    The seed only draws the n-shot demonstrations: with n_shots = 0 a greedy evaluation cannot depend on it, so it
    is computed once and counted for every seed (the interval then reflects the spread across targets only)."""
    from dlc.report import classification_report, mean_ci

    if split not in ("train", "dev", "test"):
        raise DlcUsageError(f"--split {split}: expected train, dev or test", code="E113")
    if not targets:
        raise DlcUsageError("nothing to evaluate", code="E120", hint="pass a run directory or a .fit.dln file")
    rep = EvalReport(split=split, seeds=tuple(seeds))
    for t in targets:
        p = Path(t)
        run_data_dir = None
        if p.is_dir():
            run = RunDir.open(p)
            run_data_dir = run.config().get("data_dir")
        net = load_network(t, overrides)
        graph = net.graph
        splits = load_data(graph, data_dir or run_data_dir)
        examples = getattr(splits, split)
        if not examples:
            raise DlcUsageError(f"{t}: the {split} split is empty", code="E114",
                                hint="choose another --split, or set data.*_size")
        lms = open_lms(graph, no_cache=no_cache, cache_dir=cache_dir)
        try:
            cache: dict[int, Any] = {}
            for s in (seeds or (graph.fit.seed,)):
                key = s if graph.fit.n_shots > 0 else -1
                if key not in cache:
                    cache[key] = _evaluate(graph, graph.prompts(), lms, examples, shots_from=splits.train, seed=s)
                r = cache[key]
                cr = classification_report(list(r.targets), list(r.predictions),
                                           graph.layers[graph.output].output.label_names)
                rep.rows.append({"target": t, "seed": s, "accuracy": float(r.accuracy), "n": len(examples),
                                 "report": cr.to_json()})
        finally:
            close_lms(lms)
    ci = mean_ci([r["accuracy"] for r in rep.rows])
    rep.summary = {"accuracy": ci.to_json(), "text": str(ci)}
    return rep


def format_eval(rep: EvalReport) -> str:
    """Per target: accuracy, per-class accuracy and confusion (one block when every seed gave the same result),
    then the mean ± 95% CI line."""
    from dlc.report import ClassReport, format_class_report

    parts = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rep.rows:
        groups.setdefault(row["target"], []).append(row)
    for target, rows in groups.items():
        blocks = [rows] if all(r["report"] == rows[0]["report"] for r in rows) else [[r] for r in rows]
        for b in blocks:
            r = b[0]["report"]
            cr = ClassReport(accuracy=r["accuracy"], n=r["n"], labels=tuple(r["labels"]), per_class=r["per_class"],
                             confusion=r["confusion"])
            seeds = ", ".join(str(x["seed"]) for x in b)
            same = " (identical)" if len(b) > 1 else ""
            parts.append(format_class_report(cr, title=f"== {target}  split {rep.split}  seed{'s' if len(b) > 1 else ''}"
                                                       f" {seeds}{same}"))
    acc = rep.summary["accuracy"]
    ci = "n/a (one evaluation)" if acc["ci95"] is None else f"± {acc['ci95']:.4f} (95% t-interval)"
    parts.append(f"== {rep.split} accuracy over {acc['n']} evaluation(s): mean {acc['mean']:.4f} {ci}")
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------ run

def run_inference(target: str, stdin: TextIO, stdout: TextIO, *, no_cache: bool = False,
                  cache_dir: str | None = None, batch: int = 16, hidden: bool = True) -> int:
    """`dlc run`: read JSONL examples (keys = graph input names, or the data block's dataset field names), write
    one JSON line per example: {"output": prediction, "layers": {layer: text}} plus the example's "id" if any.
    Lines are processed in batches of `batch` so output streams. Returns the number of examples."""
    from dlc import engine

    graph = load_network(target).graph
    field_of = dict(graph.data.fields)          # input name -> dataset field
    lms = open_lms(graph, no_cache=no_cache, cache_dir=cache_dir)
    n = 0
    pending: list[tuple[Example, dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        tr = engine.forward(graph, graph.prompts(), lms, [e for e, _ in pending])
        for i, (e, row) in enumerate(pending):
            o: dict[str, Any] = {}
            if "id" in row:
                o["id"] = row["id"]
            o["output"] = tr.predictions[i]
            if hidden:
                o["layers"] = {name: tr.texts[name][i] for name in graph.order}
            stdout.write(json.dumps(o, ensure_ascii=False) + "\n")
        stdout.flush()
        pending.clear()

    try:
        for lineno, line in enumerate(stdin, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DlcUsageError(f"stdin line {lineno} is not JSON ({e.msg})", code="E122",
                                    hint='one object per line, e.g. {"x": "text"}') from None
            if not isinstance(row, dict):
                raise DlcUsageError(f"stdin line {lineno} is not a JSON object", code="E122")
            inputs = {}
            for name in graph.inputs:
                key = name if name in row else field_of.get(name)
                if key is None or key not in row:
                    raise DlcUsageError(f"stdin line {lineno} has no field '{name}'", code="E123",
                                        hint=f"the network's inputs are: {', '.join(graph.inputs)}")
                inputs[name] = str(row[key])
            pending.append((Example(inputs=inputs, target="", id=str(row.get("id", lineno))), row))
            n += 1
            if len(pending) >= batch:
                flush()
        flush()
    finally:
        close_lms(lms)
    return n


# ------------------------------------------------------------------------------------------------ runs

def list_runs(root: str = "runs") -> list[dict[str, Any]]:
    from dlc.report import run_summary
    from dlc.rundir import iter_runs

    return [run_summary(r) for r in iter_runs(root)]

"""A sweep's trials as Ray tasks (Ray core): a local Ray started here by default, a cluster when RAY_ADDRESS or
--address names one. ray is optional (`pip install 'dlc[ray]'`) and imported only here.

Concurrency follows what a trial needs. A trial with an embedded model loads it into its worker process and decodes
on CPU: it asks Ray for `cpus_per_trial` CPUs (default min(4, CPUs of the largest node), or that node's CPUs split
over --workers) and llama.cpp uses as many threads (DLC_THREADS), so Ray places as many trials per node as fit.
Trials whose models are OpenAI-compatible endpoints (vLLM, llama-server, dlc serve) need no CPU: --workers of them
(default 4) run at once, each sending its own concurrent requests (model.max_concurrency).

Each task runs dlc.app.sweep.run_trial, which writes its run directory itself: on a cluster the runs root must be a
path every node sees (a shared filesystem), as Ray Tune's storage path. Tasks are not retried by Ray (a retry would
start over): a trial whose worker died is reported and resumed from its checkpoint when the sweep runs again.
"""
from __future__ import annotations

import importlib.util
import logging
import socket
from typing import Any, Callable, TextIO

from dlc.app.sweep import FAILED, FINISHED, INTERRUPTED, SKIPPED, SweepInterrupted, TrialSpec, lost, run_trial
from dlc.errors import DlcUsageError, redact

LOCAL_OBJECT_STORE = 128 * 1024 * 1024           # bytes; Ray's minimum is 75 MiB


def available() -> bool:
    """Whether ray is installed (without importing it: that takes a second)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):          # a broken or deliberately blocked installation
        return False


def _reachable(address: str, timeout: float = 5.0) -> str | None:
    """None when HOST:PORT of `address` (`ray://HOST:PORT` or the GCS's `HOST:PORT`) accepts a TCP connection, else
    why not. Ray itself waits minutes for an unreachable GCS before it gives up; this says so in seconds.
    `auto`/`local` and addresses without a port are left to Ray."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as e:
        return f"{host}:{port} does not accept connections ({e.strerror or type(e).__name__})"


def _init(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at `address`, or start a local Ray (no dashboard); True when started here."""
    if ray.is_initialized():
        return False
    hint = "check RAY_ADDRESS / --address (e.g. ray://HEAD:10001), or pass --no-ray"
    why = _reachable(address) if address else None
    if why:
        raise DlcUsageError(f"cannot reach the Ray cluster at {redact(address or '')}: {redact(why)}", code="E145",
                            hint=hint)
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # trials hand back small dicts: a small object store instead of Ray's default 30% of the memory
            # "local": a Ray of its own, even where `ray start` runs one (join that with --address auto)
            ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE,
                     logging_level=logging.WARNING, log_to_driver=False)
    except Exception as e:          # noqa: BLE001 - ConnectionError, RuntimeError, ...: one line for the user
        text = str(e).strip().splitlines()
        raise DlcUsageError(f"cannot {'reach the Ray cluster at ' + address if address else 'start a local Ray'}: "
                            f"{redact(text[0] if text else type(e).__name__)}", code="E145",
                            hint=hint) from None
    return True


def resources(ray: Any, specs: list[TrialSpec], workers: int | None,
              cpus_per_trial: float | None) -> tuple[float, int, str]:
    """(CPUs per trial, trials in flight at most, a line saying so) for this cluster and these trials."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = max((int(n.get("Resources", {}).get("CPU", 0)) for n in nodes), default=1) or 1
    total = int(ray.cluster_resources().get("CPU", 0))
    if any(s.trial.embedded for s in specs):
        cpt = cpus_per_trial or max(1, node_cpus // workers if workers else min(4, node_cpus))
        cpt = min(cpt, node_cpus)
        inflight = workers or max(1, int(total // cpt))       # what Ray can place at once anyway
    else:
        cpt = cpus_per_trial or 0
        inflight = workers or 4
    line = (f"ray: {total} CPU(s) on {len(nodes)} node(s); {cpt:g} CPU(s) per trial, "
            f"at most {min(inflight, len(specs))} trial(s) at once")
    return cpt, max(1, inflight), line


def run(specs: list[TrialSpec], done: Callable[[dict[str, Any]], None], *, address: str | None,
        workers: int | None, cpus_per_trial: float | None, fail_fast: bool,
        out: TextIO | None) -> list[dict[str, Any]]:
    """Run every spec as a Ray task, at most `inflight` at once, reporting each as it ends (`done`). Ctrl-C
    cancels the running tasks (each fit keeps its last checkpoint) and raises SweepInterrupted with what ended."""
    import ray

    started = _init(ray, address)
    try:
        cpt, inflight, line = resources(ray, specs, workers, cpus_per_trial)
        if out is not None:
            print(line, file=out, flush=True)
        task = ray.remote(run_trial).options(num_cpus=cpt, max_retries=0)
        pending, running, results = list(specs), {}, []
        stop = False
        try:
            while running or (pending and not stop):
                while pending and not stop and len(running) < inflight:
                    spec = pending.pop(0)
                    if spec.trial.embedded and cpt >= 1 and "DLC_THREADS" not in spec.env:
                        spec.env = {**spec.env, "DLC_THREADS": str(int(cpt))}   # llama.cpp threads = its CPUs
                    running[task.remote(spec)] = spec
                # with a timeout: a Ctrl-C only reaches Python between waits (ray.wait blocks in C++)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    spec = running.pop(ref)
                    r = _get(ray, ref, spec)
                    results.append(r)
                    done(r)
                    if fail_fast and r["status"] != FINISHED and not stop:
                        stop = True
                        for other in running:                 # --fail-fast: the others stop at a checkpoint
                            ray.cancel(other)
        except KeyboardInterrupt:
            for ref in running:
                ray.cancel(ref)
            for ref, spec in running.items():
                r = _get(ray, ref, spec, timeout=60)
                results.append(r)
                done(r)
            raise SweepInterrupted(results) from None
        for spec in pending:
            r = lost(spec, SKIPPED, "not started (--fail-fast)")
            results.append(r)
            done(r)
        return results
    finally:
        if started:
            ray.shutdown()


def _get(ray: Any, ref: Any, spec: TrialSpec, timeout: float | None = None) -> dict[str, Any]:
    from ray.exceptions import GetTimeoutError, TaskCancelledError

    try:
        return ray.get(ref, timeout=timeout)
    except (TaskCancelledError, GetTimeoutError):
        return lost(spec, INTERRUPTED, "interrupted (resumable: run the sweep again)")
    except Exception as e:          # noqa: BLE001 - the worker process died (OOM, kill -9, node lost)
        text = str(e).strip().splitlines()
        return lost(spec, FAILED, f"the Ray worker failed: {redact(text[0] if text else type(e).__name__)} "
                                     "(resumable: run the sweep again)")

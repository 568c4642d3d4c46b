"""Experiment tracking: a fit logged to MLflow while it runs (`dlc fit --mlflow`, or `MLFLOW_TRACKING_URI` set).

What is logged, in the run directory's own terms, so an MLflow comparison shows what `dlc runs` shows:
  params    every resolved setting, keyed as `--set` keys (fit.iters, data.task, model.default.backend, ...), plus
            the data directory; values pass through dlc.errors.redact and a key naming a secret is never logged
  metrics   per training iteration (step = iteration): dev_accuracy, best_dev_accuracy, elbo, tokens,
            train_accuracy, dev_score; at the end result.* (dev/test accuracy before and after) and usage.*
  artifacts result.json, config.json, <net>.fit.dln and any HTML report (*.html) in the run directory
  tags      dlc.run_dir, dlc.net, dlc.version, the graph/config hashes, and mlflow.parentRunId for a sweep's trials

The MLflow run id is kept in the run directory (mlflow.json, ids only: never the tracking URI, which may hold a
password), so `dlc fit --resume RUN --mlflow` continues the same MLflow run, and steps already logged are not logged
twice. mlflow is an optional dependency (`pip install 'dlc[mlflow]'`), imported only when tracking is on. A tracking
store that fails in the middle of a fit costs a warning, never the fit.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, TextIO

from dlc import jsonread
from dlc.artifacts.records import FitResult, IterationRecord
from dlc.artifacts.rundir import CONFIG, RESULT, RunDir, atomic_write_json
from dlc.errors import DlcUsageError, redact

INSTALL = "pip install 'dlc[mlflow]'"
TRACKING_FILE = "mlflow.json"
# a setting whose *name* says it holds a secret is never logged (dlc keeps none, E315: this is a second line).
# Whole words only: budget_tokens or max_tokens count tokens, api_key_env names a variable.
_SECRET_KEY = re.compile(r"(?i)(^|[_-])(api[_-]?key|password|passwd|secret|token|credentials?)$")
_MAX_VALUE = 6000                      # MLflow's limit on a param value (characters)
_BATCH = 100                           # MLflow's limit on params/tags per log_batch request
# IterationRecord field -> metric name
ITERATION_METRICS = (("dev", "dev_accuracy"), ("best_dev", "best_dev_accuracy"), ("elbo", "elbo"),
                     ("tokens", "tokens"), ("train_acc", "train_accuracy"), ("dev_score", "dev_score"))
# MLflow retries a request to an unreachable server 7 times with backoff factor 2 (about 4 minutes per request): a
# fit would stall that long at start (the store check) and again at every logging call while a server is down. dlc
# uses a few seconds instead, unless the user set these variables (MLflow reads them at each request).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def wanted(flag: bool, env: Mapping[str, str] | None = None) -> bool:
    """Tracking is on with --mlflow or when MLFLOW_TRACKING_URI is set (MLflow's own convention)."""
    env = os.environ if env is None else env
    return bool(flag or env.get("MLFLOW_TRACKING_URI"))


def _mlflow() -> Any:
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise DlcUsageError("experiment tracking (--mlflow or MLFLOW_TRACKING_URI) needs the mlflow package, "
                            "which is not installed", code="E141",
                            hint=f"{INSTALL}   (or unset MLFLOW_TRACKING_URI / drop --mlflow)") from None
    return MlflowClient


def params_of(config: Mapping[str, Any]) -> dict[str, str]:
    """A run's config.json as MLflow params: `fit.K`, `data.K`, `model.NAME.K` (the `--set` keys), `data_dir`, `task`.
    Keys that name a secret are dropped; every value is redacted (URL passwords, registered keys) and cut to
    MLflow's limit."""
    flat: dict[str, Any] = {}
    for block in ("fit", "data"):
        for k, v in (config.get(block) or {}).items():
            flat[f"{block}.{k}"] = v
    for name, model in (config.get("models") or {}).items():
        for k, v in (model or {}).items():
            if k != "name":
                flat[f"model.{name}.{k}"] = v
    for k in ("data_dir", "task"):
        if config.get(k) is not None:
            flat[k] = config[k]
    out = {}
    for k, v in sorted(flat.items()):
        if _SECRET_KEY.search(k.rsplit(".", 1)[-1]):
            continue
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
        out[k] = redact(text)[:_MAX_VALUE]
    return out


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def iteration_metrics(rec: IterationRecord) -> dict[str, float]:
    return {name: v for field, name in ITERATION_METRICS if (v := _finite(getattr(rec, field))) is not None}


def result_metrics(res: FitResult) -> dict[str, float]:
    vals = {"result.dev_accuracy": res.dev_accuracy, "result.test_accuracy": res.test_accuracy,
            "result.baseline_dev_accuracy": res.baseline.dev_accuracy,
            "result.baseline_test_accuracy": res.baseline.test_accuracy,
            "result.iterations": res.iterations, "result.best_dev_during_training": res.best_dev_during_training}
    for k in ("calls", "prompt_tokens", "completion_tokens", "cache_hits", "wall_seconds"):
        vals[f"usage.{k}"] = (res.usage or {}).get(k)
    return {k: f for k, v in vals.items() if (f := _finite(v)) is not None}


class MlflowTracker:
    """One fit's MLflow run (a `dlc.app.training.FitObserver`). Create it before the fit (`connect` checks the
    package and the store, so a mistake is an error before any run directory exists), hand it to `fit`, then call
    `finished` (or `aborted`)."""

    def __init__(self, *, tracking_uri: str | None = None, experiment: str | None = None,
                 parent_run_id: str | None = None, err: TextIO | None = sys.stderr) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.err = err
        self.client: Any = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._steps: set[int] = set()
        self._broken = False               # the store failed once: stop talking to it for this fit

    # ------------------------------------------------------------------------------------------------ set-up
    def connect(self) -> "MlflowTracker":
        """Import mlflow (E141 when missing) and reach the tracking store (E142 when it refuses)."""
        client_cls = _mlflow()
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        try:
            self.client = client_cls(tracking_uri=self.tracking_uri) if self.tracking_uri else client_cls()
            self.client.search_experiments(max_results=1)
        except Exception as e:      # noqa: BLE001 - whatever the store raises, the user gets one line
            raise DlcUsageError(f"cannot use the MLflow tracking store: {redact(_first_line(e))}", code="E142",
                                hint="check MLFLOW_TRACKING_URI: an http(s):// tracking server, sqlite:///FILE, "
                                     "or file:///DIR (MLflow 3 wants MLFLOW_ALLOW_FILE_STORE=true for that one)"
                                ) from None
        return self

    def _experiment_id(self, net: str) -> str:
        name = self.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or net
        exp_id = os.environ.get("MLFLOW_EXPERIMENT_ID") if not self.experiment else None
        if exp_id:
            return exp_id
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:           # noqa: BLE001 - created meanwhile by a concurrent trial of a sweep
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # ------------------------------------------------------------------------------------------------ observer
    def started(self, run: RunDir) -> None:
        """The run directory exists (new or resumed): open its MLflow run, log params, tags and the iterations
        already in its trace (a resumed run, or one logged for the first time)."""
        if self.client is None:
            self._guard(self.connect)
        self._guard(self._start, run)

    def _start(self, run: RunDir) -> None:
        cfg = run.read_json(CONFIG)
        ids = _read_ids(run.path)
        if ids and self._exists(ids.get("run_id")):
            self.run_id = ids["run_id"]
            self.experiment_id = ids.get("experiment_id")
            self.client.update_run(self.run_id, status="RUNNING")
            self._steps = {m.step for m in self.client.get_metric_history(self.run_id, "tokens")}
        else:
            tags = {"dlc.run_dir": str(run.path.resolve()), "dlc.net": str(cfg.get("net")),
                    "dlc.version": str(cfg.get("dlc_version")), "dlc.graph_sha256": str(cfg.get("graph_sha256")),
                    "dlc.config_sha256": str(cfg.get("config_sha256")), "mlflow.source.name": "dlc fit",
                    "mlflow.source.type": "LOCAL"}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            mlrun = self.client.create_run(self._experiment_id(str(cfg.get("net") or "dlc")),
                                           run_name=run.path.name, tags=tags)
            self.run_id, self.experiment_id = mlrun.info.run_id, mlrun.info.experiment_id
            atomic_write_json(run.path / TRACKING_FILE, {"run_id": self.run_id,
                                                         "experiment_id": mlrun.info.experiment_id})
            self._log_params(params_of(cfg))
        for rec in run.trace():
            self._log_iteration(rec)

    def iteration(self, rec: IterationRecord) -> None:
        if self.run_id is not None:
            self._guard(self._log_iteration, rec)

    def finished(self, run_dir: Path, result: FitResult | None) -> None:
        """The fit ended (or a finished run was resumed): result metrics, artifacts, status FINISHED."""
        if self.run_id is None:
            self.started(RunDir.open(run_dir))
        if self.run_id is None:
            return
        self._guard(self._finish, Path(run_dir), result)

    def _finish(self, run_dir: Path, result: FitResult | None) -> None:
        from mlflow.entities import Metric

        if result is not None:
            now = _ms()
            metrics = [Metric(k, v, now, int(result.iterations)) for k, v in result_metrics(result).items()]
            for i in range(0, len(metrics), _BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[i:i + _BATCH])
        for f in artifacts_of(run_dir):
            self.client.log_artifact(self.run_id, str(f))
        self.client.set_terminated(self.run_id, status="FINISHED")

    def aborted(self, interrupted: bool) -> None:
        """The fit stopped on Ctrl-C (KILLED: `--resume` continues it) or an error (FAILED)."""
        if self.run_id is not None:
            self._guard(self.client.set_terminated, self.run_id, status="KILLED" if interrupted else "FAILED")

    # ------------------------------------------------------------------------------------------------ logging
    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + _BATCH])

    def _log_iteration(self, rec: IterationRecord) -> None:
        from mlflow.entities import Metric

        if rec.iteration in self._steps:
            return
        now = _ms()
        metrics = [Metric(k, v, now, int(rec.iteration)) for k, v in iteration_metrics(rec).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
        self._steps.add(rec.iteration)

    def _exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            self.client.get_run(run_id)
            return True
        except Exception:           # noqa: BLE001 - another store, or the run was deleted: start a new one
            return False

    def _guard(self, fn: Any, *args: Any, **kw: Any) -> None:
        """Tracking never costs a fit: a failing store is one warning, after which this tracker stops calling it
        (each call to a dead server would wait for its retries), and the fit goes on."""
        if self._broken:
            return
        try:
            with sigint_deferred():
                fn(*args, **kw)
        except Exception as e:      # noqa: BLE001
            self._broken = True
            if self.err is not None:
                print(f"warning: MLflow logging failed, the rest of this run is not logged: "
                      f"{redact(_first_line(e))}", file=self.err, flush=True)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Ctrl-C during a store call takes effect when the call ends. An interrupt raised inside MLflow's SQLAlchemy
    transaction left the store's session unusable, so the KILLED status that follows could not be written and the
    run stayed RUNNING (a test caught it on a loaded machine); the fit's own checkpoint is already on disk, so
    waiting for one store call loses nothing. A second Ctrl-C interrupts at once (a store that hangs can hold a call
    for its HTTP timeout and retries). Only in the main thread (signals are delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def later(signum: int, frame: Any) -> None:
        got.append(signum)
        if len(got) > 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, later)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if len(got) == 1:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous != signal.SIG_IGN:        # SIG_DFL, or a handler set outside Python (None)
                raise KeyboardInterrupt


def artifacts_of(run_dir: Path) -> list[Path]:
    """result.json, config.json, `<net>.fit.dln` and every HTML report in the run directory (sorted)."""
    p = Path(run_dir)
    files = [p / RESULT, p / CONFIG, *sorted(p.glob("*.fit.dln")), *sorted(p.glob("*.html"))]
    return [f for f in files if f.is_file()]


def _read_ids(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = jsonread.loads((run_dir / TRACKING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):       # jsonread.BadJSON and UnicodeDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def _ms() -> int:
    return int(time.time() * 1000)


def tracker_for(flag: bool, *, experiment: str | None = None, parent_run_id: str | None = None,
                err: TextIO | None = sys.stderr, env: Mapping[str, str] | None = None) -> MlflowTracker | None:
    """The tracker `dlc fit` uses (connected), or None when tracking is off."""
    if not wanted(flag, env):
        return None
    return MlflowTracker(experiment=experiment, parent_run_id=parent_run_id, err=err).connect()


class SweepParent:
    """A sweep's own MLflow run: its grid and --set values as params; each trial's run names it as parent
    (mlflow.parentRunId, so the MLflow UI nests them); at the end the sweep's JSON summary as an artifact."""

    def __init__(self, tracker: MlflowTracker, experiment: str) -> None:
        self.tracker, self.experiment = tracker, experiment
        self.run_id: str | None = None

    def start(self, net: str, grid: Any, sets: Mapping[str, str]) -> "SweepParent":
        from mlflow.entities import Param

        client = self.tracker.client
        exp_id = self.tracker._experiment_id(net)
        self.experiment = self.tracker.experiment or client.get_experiment(exp_id).name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        mlrun = client.create_run(exp_id, run_name=f"sweep-{net}-{stamp}",
                                  tags={"dlc.sweep": "true", "dlc.net": net, "mlflow.source.name": "dlc sweep"})
        self.run_id = mlrun.info.run_id
        params = [Param(f"grid.{k}", redact(",".join(v))[:_MAX_VALUE]) for k, v in grid]
        params += [Param(f"set.{k}", redact(v)[:_MAX_VALUE]) for k, v in sorted(sets.items())
                   if not _SECRET_KEY.search(k.rsplit(".", 1)[-1])]
        for i in range(0, len(params), _BATCH):
            client.log_batch(self.run_id, params=params[i:i + _BATCH])
        return self

    @property
    def tracking_uri(self) -> str:
        """The store this sweep logs to, absolute, so trials in other processes (other working directories)
        log to the same one: a relative sqlite:///FILE or a plain path is resolved here."""
        import mlflow

        uri = self.tracker.tracking_uri or mlflow.get_tracking_uri()
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
        if "://" not in uri and ":" not in uri[:3]:
            return Path(uri).resolve().as_uri()
        return uri

    def sweep_finished(self, summary: Mapping[str, Any], *, interrupted: bool) -> None:
        """The summary (every trial, every group's mean ± interval) as sweep.json; status FINISHED, or FAILED
        when a trial did not finish, KILLED when interrupted."""
        import tempfile

        def log() -> None:
            with tempfile.TemporaryDirectory() as d:
                f = Path(d) / "sweep.json"
                f.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
                self.tracker.client.log_artifact(self.run_id, str(f))
            ok = all(t.get("status") == "finished" for t in summary.get("trials", []))
            self.tracker.client.set_terminated(self.run_id, status="KILLED" if interrupted else
                                               "FINISHED" if ok else "FAILED")
        self.tracker._guard(log)

    def aborted(self, interrupted: bool) -> None:
        self.tracker.run_id = self.run_id
        self.tracker.aborted(interrupted)


def sweep_parent(flag: bool, *, experiment: str | None, net: str, grid: Any, sets: Mapping[str, str],
                 err: TextIO | None = sys.stderr) -> SweepParent | None:
    """The parent run of `dlc sweep --mlflow` (or MLFLOW_TRACKING_URI set), or None when tracking is off."""
    tracker = tracker_for(flag, experiment=experiment, err=err)
    if tracker is None:
        return None
    return SweepParent(tracker, experiment or "").start(net, grid, sets)


"""`dlc fit --mlflow` and `dlc sweep --mlflow` against real MLflow tracking stores in the test's directory (a
file:// store and a sqlite:/// database, MLflow 3's default backend), read back with MLflow's own client: params
(every resolved setting, no secrets), metrics per iteration equal to trace.jsonl, result metrics, artifacts, one
MLflow run continued by `--resume`, a sweep's trials nested under its parent run (trials logging from Ray workers);
and the one-line errors: no mlflow package (E141), a store that cannot be used (E142, in seconds)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlc.app.tracking import HTTP_DEFAULTS, params_of
from dlc.cli import main
from dlc.errors import add_secret

from conftest import DATA, REPO, optional_package

# mlflow is in the `test` extra, so CI runs these tests. Without it they skip with this reason, unless
# DLC_REQUIRE_MLFLOW=1 (set by .ci/run) makes the missing package an error: CI cannot pass by skipping them.
_tracking = optional_package("mlflow.tracking", "DLC_REQUIRE_MLFLOW")
MlflowClient = _tracking.MlflowClient if _tracking is not None else None
pytestmark = pytest.mark.skipif(MlflowClient is None, reason="mlflow is not installed (pip install -e '.[test]')")

SCRIPTED_MODEL = "\nmodel default { backend = scripted }\n"
SMALL = ["--set", "fit.iters=2", "--set", "fit.batch_size=4", "--set", "fit.num_p_samples=3",
         "--set", "data.train_size=16", "--set", "data.dev_size=8", "--set", "data.test_size=12"]


@pytest.fixture(autouse=True)
def scripted(monkeypatch, tmp_path):
    monkeypatch.delenv("DLC_DATA_DIR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")     # MLflow 3 refuses file:// stores without it
    for k in HTTP_DEFAULTS:     # dlc sets MLflow's retry variables in its process: restored after each test
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    Path("dln1.dln").write_text((REPO / "graphs" / "dln1.dln").read_text() + SCRIPTED_MODEL)


def file_store(tmp_path: Path) -> str:
    return (tmp_path / "mlruns").as_uri()


def sqlite_store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def dlc(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def runs_of(uri: str, experiment: str = "dln1") -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return client, client.search_runs([exp.experiment_id])


def test_fit_logs_params_metrics_and_artifacts(capsys, tmp_path, monkeypatch):
    uri = file_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)    # set: tracking is on without --mlflow
    rc, out, err = dlc(capsys, "fit", "dln1.dln", *SMALL, "--data-dir", str(DATA), "--no-progress")
    assert rc == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    client, (r,) = runs_of(uri)
    assert f"mlflow run: {r.info.run_id}" in out
    assert r.info.status == "FINISHED" and r.info.run_name == run_dir.name
    assert r.data.tags["dlc.run_dir"] == str(run_dir.resolve()) and r.data.tags["dlc.net"] == "dln1"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert r.data.tags["dlc.config_sha256"] == cfg["config_sha256"]
    # params: every resolved fit/data/model setting, under its --set key
    p = r.data.params
    for block in ("fit", "data"):
        for k in cfg[block]:
            assert f"{block}.{k}" in p, f"{block}.{k}"
    for k in cfg["models"]["default"]:
        assert k == "name" or f"model.default.{k}" in p
    assert (p["fit.iters"], p["fit.seed"], p["data.dev_size"], p["data.task"], p["model.default.backend"]) == \
        ("2", "42", "8", "subj", "scripted")
    assert p["data_dir"] == str(DATA)
    # metrics per iteration (step = iteration), exactly the trace's
    trace = [json.loads(x) for x in (run_dir / "trace.jsonl").read_text().splitlines()]
    assert len(trace) == 3                      # 2 training iterations + the final validation
    for field, name in (("tokens", "tokens"), ("dev", "dev_accuracy"), ("elbo", "elbo")):
        hist = client.get_metric_history(r.info.run_id, name)
        assert sorted((m.step, m.value) for m in hist) == \
            [(t["iteration"], pytest.approx(t[field])) for t in trace if t.get(field) is not None], name
    assert client.get_metric_history(r.info.run_id, "elbo"), "the trained iterations have an ELBO"
    res = json.loads((run_dir / "result.json").read_text())
    m = r.data.metrics
    assert m["result.test_accuracy"] == pytest.approx(res["test_accuracy"])
    assert m["result.dev_accuracy"] == pytest.approx(res["dev_accuracy"])
    assert m["result.baseline_dev_accuracy"] == pytest.approx(res["baseline"]["dev_accuracy"])
    assert m["usage.calls"] == res["usage"]["calls"]
    names = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"result.json", "config.json", "dln1.fit.dln", "report.html"} <= names     # report.html: dlc report
    logged = Path(client.download_artifacts(r.info.run_id, "result.json", str(tmp_path / "dl")))
    assert json.loads(logged.read_text()) == res
    # the run directory knows its MLflow run (ids only: a tracking URI may hold a password)
    ids = json.loads((run_dir / "mlflow.json").read_text())
    assert ids["run_id"] == r.info.run_id and "mlruns" not in json.dumps(ids)


def test_resume_keeps_one_mlflow_run(capsys, tmp_path, monkeypatch):
    """An interrupted fit (Ctrl-C after its first checkpoint) resumed with --mlflow: one MLflow run, KILLED and
    then FINISHED, every iteration logged once (sqlite store: MLflow 3's default backend)."""
    uri = sqlite_store(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=uri)
    proc = subprocess.Popen([sys.executable, "-m", "dlc", "fit", "dln1.dln", *SMALL, "--set", "fit.iters=4",
                             "--set", "model.default.delay=0.1", "--no-cache", "--data-dir", str(DATA),
                             "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "runs").is_dir() or not any((p / "checkpoint.json").exists()
                                                       for p in (tmp_path / "runs").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    (run_dir,) = (tmp_path / "runs").iterdir()
    client, (r,) = runs_of(uri)
    assert r.info.status == "KILLED"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rc, out, err = dlc(capsys, "fit", "--resume", str(run_dir), "--no-progress", "--no-cache")
    assert rc == 0, err
    client, (r2,) = runs_of(uri)
    assert r2.info.run_id == r.info.run_id and r2.info.status == "FINISHED"
    trace = [json.loads(x) for x in (run_dir / "trace.jsonl").read_text().splitlines()]
    steps = [m.step for m in client.get_metric_history(r.info.run_id, "tokens")]
    assert sorted(steps) == [t["iteration"] for t in trace] == list(range(5)), "every iteration logged once"


def test_a_run_fitted_without_tracking_is_logged_by_resuming_it(capsys, tmp_path, monkeypatch):
    uri = file_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rc, out, err = dlc(capsys, "fit", "dln1.dln", *SMALL, "--data-dir", str(DATA), "--no-progress", "--no-mlflow")
    assert rc == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (tmp_path / "mlruns").exists(), "--no-mlflow wins over MLFLOW_TRACKING_URI"
    for _ in range(2):          # the finished run logged afterwards; then again: still one MLflow run
        rc, out, err = dlc(capsys, "fit", "--resume", str(run_dir), "--mlflow", "--no-progress",
                           "--mlflow-experiment", "later")
        assert rc == 0, err
    client, (r,) = runs_of(uri, "later")
    assert r.info.status == "FINISHED" and r.data.params["fit.iters"] == "2"
    steps = [m.step for m in client.get_metric_history(r.info.run_id, "tokens")]
    assert sorted(steps) == [0, 1, 2], "every iteration logged once"
    assert "report.html" in {a.path for a in client.list_artifacts(r.info.run_id)}


def test_params_never_hold_secrets():
    add_secret("sk-test-9f8e7d6c5b4a")
    cfg = {"fit": {"iters": 2}, "data": {"path": "https://ann:pa55word-xyz@data.example/d.jsonl"},
           "models": {"default": {"name": "default", "backend": "openai", "api_key": "sk-test-9f8e7d6c5b4a",
                                  "api_key_env": "OPENAI_API_KEY", "model": "served sk-test-9f8e7d6c5b4a"}}}
    p = params_of(cfg)
    text = json.dumps(p)
    assert "pa55word-xyz" not in text and "sk-test-9f8e7d6c5b4a" not in text
    assert "model.default.api_key" not in p                      # a key naming a secret is not logged at all
    assert p["model.default.api_key_env"] == "OPENAI_API_KEY"    # the *name* of the variable is not a secret
    assert p["fit.iters"] == "2" and "pa55word-xyz" not in p["data.path"]


def test_sweep_trials_are_nested_under_one_parent_run(capsys, tmp_path):
    """`dlc sweep --mlflow` on a local Ray (when installed): the trials log from Ray worker processes to the same
    sqlite store, each as a child of the sweep's run, which holds the grid and the summary."""
    uri = sqlite_store(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=uri)
    for k in ("RAY_ADDRESS", "DLC_DATA_DIR"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "dlc", "sweep", "dln1.dln", "--grid", "fit.seed=13,42", *SMALL,
                        "--data-dir", str(DATA), "--workers", "2", "--mlflow-experiment", "sweeps"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    client, found = runs_of(uri, "sweeps")
    parents = [x for x in found if x.data.tags.get("dlc.sweep") == "true"]
    trials = [x for x in found if x.data.tags.get("dlc.sweep") != "true"]
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["grid.fit.seed"] == "13,42"
    assert parent.data.params["set.fit.iters"] == "2"
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert sorted(t.data.params["fit.seed"] for t in trials) == ["13", "42"]
    assert all(t.info.status == "FINISHED" and "result.test_accuracy" in t.data.metrics for t in trials)
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep.json",
                                                        str(tmp_path / "dl"))).read_text())
    assert [t["status"] for t in summary["trials"]] == ["finished", "finished"]
    assert {t["mlflow_run_id"] for t in summary["trials"]} == {t.info.run_id for t in trials}


def _blocked(*modules: str) -> str:
    """Python code run before `dlc`: importing these modules fails, as when the package is not installed."""
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)


def test_without_mlflow_the_error_says_how_to_install(tmp_path):
    code = _blocked("mlflow") + "from dlc.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=file_store(tmp_path))
    r = subprocess.run([sys.executable, "-c", code, "fit", "dln1.dln", *SMALL, "--data-dir", str(DATA),
                        "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("error[E141]") and "pip install 'dlc[mlflow]'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("uri", ["nosuchscheme://tracking", "http://127.0.0.1:9"], ids=["bad-scheme", "no-server"])
def test_a_store_that_cannot_be_used_is_an_error_before_the_run(capsys, tmp_path, monkeypatch, uri):
    """MLflow alone retries a server that does not answer for about 4 minutes; dlc gives up in seconds."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.monotonic()
    rc, out, err = dlc(capsys, "fit", "dln1.dln", *SMALL, "--data-dir", str(DATA), "--no-progress")
    assert rc == 1 and err.startswith("error[E142]") and "Traceback" not in err, err
    assert time.monotonic() - t0 < 60 and not (tmp_path / "runs").exists()


def test_ctrl_c_during_a_store_call_takes_effect_after_it():
    """A Ctrl-C that lands inside a store call must not cut MLflow's transaction (the KILLED status that follows
    could then not be written: a run left RUNNING, seen on a loaded machine): the call ends, then the interrupt."""
    from dlc.app.tracking import MlflowTracker

    done = []

    def slow_store_call():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)                     # the signal arrives during the call
        done.append("the call ended")

    t = MlflowTracker(tracking_uri=None, experiment=None, err=None)
    with pytest.raises(KeyboardInterrupt):
        t._guard(slow_store_call)
    assert done == ["the call ended"] and not t._broken
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # restored


def test_a_second_ctrl_c_interrupts_a_store_call_at_once():
    from dlc.app.tracking import MlflowTracker

    done = []

    def hanging_store_call():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)                       # a store that hangs: the second Ctrl-C must not wait for it
        done.append("the call ended")

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        MlflowTracker(tracking_uri=None, experiment=None, err=None)._guard(hanging_store_call)
    assert done == [] and time.monotonic() - t0 < 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

"""`dlc sweep` through the real CLI: every --grid combination an ordinary scripted fit with its own run directory,
on a real local Ray (2 CPUs, no dashboard) and without Ray in this process; the summary's mean ± 95% interval
against the run files; a second invocation resumes (finished trials kept, trials interrupted by Ctrl-C continue
from their checkpoint); a trial that fails at run time does not stop the others (E143, exit 1); bad options are
one-line errors (E108); without the ray package it runs in-process (and a cluster address is E144)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlc.app.sweep import parse_grid, split_values
from dlc.cli import main
from dlc.errors import DlcUsageError
from dlc.report.stats import mean_ci

from conftest import DATA, REPO, optional_package

# ray is in the `test` extra, so CI runs the Ray tests. Without it they skip with this reason, unless
# DLC_REQUIRE_RAY=1 (set by .ci/run) makes the missing package an error: CI cannot pass by skipping them.
ray = optional_package("ray", "DLC_REQUIRE_RAY")
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install -e '.[test]')")

SCRIPTED_MODEL = "\nmodel default { backend = scripted }\n"
SMALL = ["--set", "fit.iters=1", "--set", "fit.batch_size=4", "--set", "data.train_size=8",
         "--set", "data.dev_size=6", "--set", "data.test_size=10"]
GRID = ["--grid", "fit.seed=13,42,7", "--grid", "fit.num_p_samples=2,3"]
BALANCED = ["--set", "data.cut=balanced"]         # seeded draws: the seeds' accuracies differ


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's Ray tests (starting one costs seconds): 2 CPUs, no dashboard; `dlc sweep`
    finds it initialized and uses it. Shut down at the end of the module."""
    if ray is None:
        pytest.skip("ray is not installed")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=128 * 1024 * 1024,
             logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def scripted(monkeypatch, tmp_path):
    monkeypatch.delenv("DLC_DATA_DIR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    Path("dln1.dln").write_text((REPO / "graphs" / "dln1.dln").read_text() + SCRIPTED_MODEL)


def dlc(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def runs(root: Path) -> dict[tuple[int, int], Path]:
    """(seed, num_p_samples) -> run directory, from each run's config.json."""
    out = {}
    for p in sorted(root.iterdir()):
        cfg = json.loads((p / "config.json").read_text())
        key = (cfg["fit"]["seed"], cfg["fit"]["num_p_samples"])
        assert key not in out, f"two run directories for {key}"
        out[key] = p
    return out


def table(out: str) -> dict[str, list[str]]:
    """The summary table's rows by their first cell."""
    lines = out[out.index("accuracy, mean"):].split("\n\n")[0].splitlines()[2:]
    return {ln.split()[0]: re.split(r"\s{2,}", ln.strip()) for ln in lines
            if ln.strip() and not ln.startswith("summary written")}


@needs_ray
def test_sweep_on_ray_runs_every_combination_and_summarizes(capsys, tmp_path, local_ray):
    rc, out, err = dlc(capsys, "sweep", "dln1.dln", *GRID, *SMALL, *BALANCED, "--data-dir", str(DATA), "--workers", "2")
    assert rc == 0, out + err
    assert "sweep dln1: 6 trial(s) (fit.seed × fit.num_p_samples)" in out and "ray: 2 CPU(s) on 1 node(s)" in out
    assert "at most 2 trial(s) at once" in out
    found = runs(tmp_path / "runs")
    assert set(found) == {(s, n) for s in (13, 42, 7) for n in (2, 3)}
    for (seed, n), p in found.items():        # each an ordinary, finished fit: dlc's own run files
        assert (p / "result.json").is_file() and (p / "dln1.fit.dln").is_file() and p.name.startswith("dln1-")
        cfg = json.loads((p / "config.json").read_text())
        assert cfg["overrides"]["fit.seed"] == str(seed) and cfg["fit"]["iters"] == 1
        assert cfg["data_dir"] == str(DATA)
        assert f"fit.seed={seed} fit.num_p_samples={n}" in out
    rows = table(out)
    for n in (2, 3):
        res = [json.loads((found[(s, n)] / "result.json").read_text()) for s in (13, 42, 7)]
        want = [str(mean_ci([r[k] for r in res])) for k in ("dev_accuracy", "test_accuracy")]
        want.append(str(mean_ci([r["baseline"]["test_accuracy"] for r in res])))
        assert rows[str(n)][1:] == ["3/3", *want], out
    # the same command again: nothing runs, the same table
    rc2, out2, err2 = dlc(capsys, "sweep", "dln1.dln", *GRID, *SMALL, *BALANCED, "--data-dir", str(DATA),
                          "--workers", "2")
    assert rc2 == 0, err2
    assert out2.count("finished (already)") == 6 and runs(tmp_path / "runs") == found
    assert table(out2) == rows
    # without Ray (in this process), in another root: the same accuracies (a trial is a deterministic fit)
    rc3, out3, err3 = dlc(capsys, "sweep", "dln1.dln", *GRID, *SMALL, *BALANCED, "--data-dir", str(DATA), "--no-ray",
                          "--runs-root", "inline", "--json", "sweep.json")
    assert rc3 == 0, err3
    assert "one after another in this process" in out3 and table(out3) == rows
    doc = json.loads(Path("sweep.json").read_text())
    assert doc["executor"] == "inline" and [t["status"] for t in doc["trials"]] == ["finished"] * 6
    assert {g["values"]["fit.num_p_samples"]: g["finished"] for g in doc["groups"]} == {"2": 3, "3": 3}
    assert {t["run_dir"] for t in doc["trials"]} == {str(p.resolve()) for p in (tmp_path / "inline").iterdir()}


def _failing_grid() -> list[str]:
    """data.data_dir=nope compiles (a path is only looked at when the data loads) and fails at run time (E801)."""
    return ["--grid", "fit.seed=13,42", "--grid", f"data.data_dir={DATA},nope"]


@needs_ray
def test_a_failing_trial_does_not_stop_the_others_and_a_rerun_retries_it(capsys, tmp_path, local_ray):
    rc, out, err = dlc(capsys, "sweep", "dln1.dln", *_failing_grid(), *SMALL, "--workers", "2")
    assert rc == 1 and "error[E143]: 2 of 4 trial(s) did not finish" in err, out + err
    failed = [ln for ln in out.splitlines() if re.match(r"\[\d/4\] failed ", ln)]
    assert len(failed) == 2 and all("data.data_dir=nope" in ln and "error[E801]" in ln for ln in failed), out
    assert len(re.findall(r"\[\d/4\] finished ", out)) == 2
    rows = table(out)
    assert rows[str(DATA)][1] == "2/2" and rows["nope"][1:] == ["0/2", "-", "-", "-"]
    assert len(list((tmp_path / "runs").iterdir())) == 2           # the failed trials never got a run directory
    rc, out, err = dlc(capsys, "sweep", "dln1.dln", *_failing_grid(), *SMALL, "--workers", "2")
    assert rc == 1 and out.count("finished (already)") == 2 and "error[E143]: 2 of 4" in err


def test_fail_fast_skips_the_trials_after_a_failure(capsys, tmp_path):
    grid = ["--grid", "data.data_dir=nope," + str(DATA), "--grid", "fit.seed=13,42"]
    rc, out, err = dlc(capsys, "sweep", "dln1.dln", *grid, *SMALL, "--no-ray", "--fail-fast")
    assert rc == 1 and "error[E143]: 4 of 4 trial(s) did not finish" in err, out + err
    assert out.count(" failed ") == 1 and out.count("not started (--fail-fast)") == 3
    assert not (tmp_path / "runs").exists()


SLOW = ["--set", "fit.iters=4", "--set", "model.default.delay=0.1", "--no-cache"]    # a trial lasts seconds


@pytest.mark.parametrize("where", [["--no-ray"], ["--workers", "2"]], ids=["in-process", "ray"])
def test_an_interrupted_sweep_resumes_its_trials_from_their_checkpoints(capsys, tmp_path, where):
    """Ctrl-C (SIGINT) during a sweep: exit 130, the trials in flight keep their last checkpoint; the same command
    again continues those run directories, and their results equal a sweep never interrupted."""
    if "--no-ray" not in where and ray is None:
        pytest.skip("ray is not installed")
    args = ["sweep", "dln1.dln", "--grid", "fit.seed=13,42", *SMALL, *SLOW, "--data-dir", str(DATA), *where]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "dlc", *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120

    def checkpointed() -> bool:
        root = tmp_path / "runs"
        return root.is_dir() and any((p / "checkpoint.json").exists() for p in root.iterdir())

    while not checkpointed():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted: run the same command again to continue" in err and "interrupted" in out
    started = sorted((tmp_path / "runs").iterdir())
    assert started and not any((p / "result.json").exists() for p in started)
    rc, out, err = dlc(capsys, *args)
    assert rc == 0, out + err
    assert out.count("finished (resumed)") == len(started), out
    found = {json.loads((p / "config.json").read_text())["fit"]["seed"]: p for p in (tmp_path / "runs").iterdir()}
    assert set(found) == {13, 42} and set(started) <= set(found.values())
    # an uninterrupted sweep of the same trials, elsewhere: the same results
    rc, out, err = dlc(capsys, *args, "--runs-root", "ref")
    assert rc == 0, out + err
    ref = {json.loads((p / "config.json").read_text())["fit"]["seed"]: p for p in (tmp_path / "ref").iterdir()}
    for seed in (13, 42):
        a, b = (json.loads((d[seed] / "result.json").read_text()) for d in (found, ref))
        assert (a["dev_accuracy"], a["test_accuracy"], a["prompts"]) == \
            (b["dev_accuracy"], b["test_accuracy"], b["prompts"])


def test_a_fit_interrupted_by_hand_is_one_of_the_sweeps_trials(capsys, tmp_path):
    """`dlc fit` with the trial's --set values, stopped by Ctrl-C: the sweep continues that run directory."""
    base = [*SMALL, "--set", "fit.iters=4", "--set", "model.default.delay=0.2"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "dlc", "fit", "dln1.dln", *base, "--set", "fit.seed=13",
                             "--no-cache", "--data-dir", str(DATA), "--no-progress"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "runs").is_dir() or not any((p / "checkpoint.json").exists()
                                                       for p in (tmp_path / "runs").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    (interrupted,) = (tmp_path / "runs").iterdir()
    rc, out, err = dlc(capsys, "sweep", "dln1.dln", "--grid", "fit.seed=13,42", *base, "--no-cache",
                       "--data-dir", str(DATA), "--no-ray")
    assert rc == 0, out + err
    assert "finished (resumed) fit.seed=13" in out and interrupted.name in out
    assert (interrupted / "result.json").is_file() and len(list((tmp_path / "runs").iterdir())) == 2


def test_a_run_recorded_under_an_earlier_hash_of_the_network_is_the_trial_s(tmp_path):
    """A run directory written by an earlier dlc carries the hash that dlc gave the network (one of
    identity.graph_identities today): the sweep still finds it, and a run of another network it does not."""
    from dlc.app.sweep import INTERRUPTED, Trial, find_run
    from dlc.artifacts.records import CONFIG_SCHEMA
    from dlc.artifacts.rundir import CONFIG, RunDir

    run = RunDir.create("n", explicit=tmp_path / "runs" / "r")
    run.write_json(CONFIG, {"schema": CONFIG_SCHEMA, "net": "n", "graph_sha256": "o" * 64, "config_sha256": "c" * 64,
                            "fit": {}, "seed": 1, "overrides": {"fit.seed": "13"}, "data_dir": None})
    trial = Trial(0, (("fit.seed", "13"),), {"fit.seed": "13"}, "n", "g" * 64, "c" * 64, False)
    assert find_run(tmp_path / "runs", trial, None) is None
    assert find_run(tmp_path / "runs", dataclasses.replace(trial, graph_aliases=("o" * 64,)), None) \
        == (INTERRUPTED, run.path)


def test_grid_values_and_errors(capsys):
    assert split_values("13,42,25") == ["13", "42", "25"]
    assert split_values('[a, b],[c],"x, y"') == ["[a, b]", "[c]", '"x, y"']
    assert parse_grid(["fit.seed=13,42", "data.task=trec"]) == [("fit.seed", ["13", "42"]), ("data.task", ["trec"])]
    for bad, why in ((["fit.seed"], "not BLOCK.KEY"), (["seed=1,2"], "not BLOCK.KEY"), (["fit.seed=1,,2"], "empty"),
                     (["fit.seed=1,1"], "repeats"), (["fit.seed=1", "fit.seed=2"], "twice"), ([], "at least one")):
        with pytest.raises(DlcUsageError) as e:
            parse_grid(bad)
        assert e.value.code == "E108" and why in e.value.message
    with pytest.raises(DlcUsageError) as e:
        parse_grid(["fit.iters=1,2"], {"fit.iters": "3"})
    assert e.value.code == "E108"
    # through the CLI: one line, exit 1, nothing run
    for bad in (["--grid", "fit.seed"], ["--grid", "fit.seed=1,,2"], [], ["--grid", "fit.seed=1,2", "--workers", "0"],
                ["--grid", "fit.seed=1,2", "--cpus-per-trial", "0"],
                ["--grid", "fit.seed=1,2", "--no-ray", "--address", "127.0.0.1:6379"]):
        rc, out, err = dlc(capsys, "sweep", "dln1.dln", *bad, *SMALL)
        assert rc == 1 and err.startswith("error[E108]") and "Traceback" not in err, (bad, err)
    assert not Path("runs").exists()


def test_a_grid_value_that_does_not_compile_stops_before_anything_runs(capsys, tmp_path):
    rc, out, err = dlc(capsys, "sweep", "dln1.dln", "--grid", "fit.iters=1,-3", *SMALL[2:], "--no-ray")
    assert rc == 1 and "in the trial fit.iters=-3:" in err and "error[E311]" in err, err
    assert not (tmp_path / "runs").exists()


def test_a_json_summary_path_that_cannot_be_written_stops_before_anything_runs(capsys, tmp_path):
    """`--json DIR`: every trial used to run, then the summary write died with IsADirectoryError (a traceback)."""
    Path("adir").mkdir()
    for where, why in (("adir", "is a directory"), ("dln1.dln/s.json", "dln1.dln is not a directory")):
        rc, out, err = dlc(capsys, "sweep", "dln1.dln", "--grid", "fit.seed=1", *SMALL, "--no-ray", "--json", where)
        assert rc == 1 and err.startswith(f"error[E109]: --json {where} ") and why in err, err
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_cluster_is_one_line_in_seconds(tmp_path):
    """Ray itself waits minutes for a GCS that does not answer; dlc says so in seconds (a fresh process: this
    module's own Ray is already initialized in the test process)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dlc", "sweep", "dln1.dln", "--grid", "fit.seed=1,2", *SMALL,
                        "--address", "127.0.0.1:9"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    if ray is None:
        assert r.returncode == 1 and r.stderr.startswith("error[E144]"), r.stderr
    else:
        assert r.returncode == 1 and r.stderr.startswith(
            "error[E145]: cannot reach the Ray cluster at 127.0.0.1:9: 127.0.0.1:9 does not accept connections"), \
            r.stderr
    assert time.monotonic() - t0 < 30 and not (tmp_path / "runs").exists()


def _blocked(*modules: str) -> str:
    """Python code run before `dlc`: importing these modules fails, as when the package is not installed."""
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)


def test_without_ray_it_runs_in_process_and_a_cluster_address_says_how_to_install(tmp_path):
    code = _blocked("ray") + "from dlc.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    base = [sys.executable, "-c", code, "sweep", "dln1.dln", "--grid", "fit.seed=13,42", *SMALL,
            "--data-dir", str(DATA)]
    r = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ray is not installed: pip install 'dlc[ray]'" in r.stdout and len(list((tmp_path / "runs").iterdir())) == 2
    r = subprocess.run(base, cwd=tmp_path, env=dict(env, RAY_ADDRESS="ray://127.0.0.1:10001"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("error[E144]") and "pip install 'dlc[ray]'" in r.stderr


def test_dlc_imports_neither_ray_nor_mlflow_unless_used(tmp_path):
    """The extras stay optional: a fit without tracking and a sweep with --no-ray never import them."""
    code = ("import sys\nfrom dlc.cli import main\n"
            f"assert main(['fit', 'dln1.dln', *{SMALL!r}, '--data-dir', {str(DATA)!r}, '--no-progress']) == 0\n"
            f"assert main(['sweep', 'dln1.dln', '--grid', 'fit.seed=1,2', *{SMALL!r}, '--data-dir', {str(DATA)!r}, "
            "'--no-ray', '--runs-root', 'sw']) == 0\n"
            "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for k in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"

"""Starting a run (issue 16): runs started at the same instant into one `--run-dir` never mix files (exactly one
wins, and every file of the winner is its own), and a kill -9 while a run directory is being created leaves nothing
under the final name (the directory is built under a temporary name with its lock held, then renamed).

Scripted LM, small fits, no network."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dlc.app.training import fit
from dlc.artifacts import manifest
from dlc.artifacts.rundir import CONFIG, GRAPH, LOCK, RunDir, iter_runs
from dlc.errors import DlcArtifactError, DlcUsageError

from conftest import DATA, REPO

SMALL = {"fit.iters": "2", "fit.batch_size": "4", "fit.num_p_samples": "3", "data.train_size": "16",
         "data.dev_size": "8", "data.test_size": "12", "model.default.backend": "scripted"}


def _fit(run_dir: Path, seed: int):
    return fit(str(REPO / "graphs" / "dln1.dln"), overrides={**SMALL, "fit.seed": str(seed)}, run_dir=str(run_dir),
               no_cache=True, data_dir=str(DATA), out=None, err=None, progress=False)


def _race(run_dir: Path, seeds: list[int], monkeypatch) -> tuple[dict[int, object], dict[int, BaseException]]:
    """Start one fit per seed into `run_dir` at the same instant: threads released by a barrier, and again (all
    checks done, models open) just before the run directory is made, with thread switches as frequent as can be."""
    import dlc.app.training as training

    barrier = threading.Barrier(len(seeds))
    at_create = threading.Barrier(len(seeds))
    real_open = training.open_lms

    def open_together(*a, **k):
        lms = real_open(*a, **k)
        at_create.wait(60)
        return lms

    monkeypatch.setattr(training, "open_lms", open_together)
    won: dict[int, object] = {}
    lost: dict[int, BaseException] = {}

    def one(seed: int) -> None:
        barrier.wait()
        try:
            won[seed] = _fit(run_dir, seed)
        except BaseException as e:        # noqa: BLE001 (collected and checked below)
            lost[seed] = e

    threads = [threading.Thread(target=one, args=(s,)) for s in seeds]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
            assert not t.is_alive(), "a racing fit hung"
    finally:
        sys.setswitchinterval(interval)
    return won, lost


def _strip(rec: dict) -> dict:
    """A trace record without what differs between two identical runs (timings, token totals of a shared cache)."""
    return {k: v for k, v in rec.items() if k not in ("tokens", "usage", "elapsed", "wall_seconds", "seconds")}


def _assert_all_files_are_the_winners(run_dir: Path, seed: int, solo: Path) -> None:
    cfg = json.loads((run_dir / CONFIG).read_text())
    graph = manifest.from_json(json.loads((run_dir / GRAPH).read_text()))
    res = json.loads((run_dir / "result.json").read_text())
    ck = json.loads((run_dir / "checkpoint.json").read_text())
    assert cfg["seed"] == seed and cfg["overrides"]["fit.seed"] == str(seed)
    assert graph.fit.seed == seed and res["seed"] == seed
    assert ck["config_sha256"] == cfg["config_sha256"] and ck["graph_sha256"] == cfg["graph_sha256"]
    # the trace and the result are the ones a run of that seed alone produces
    solo_cfg = json.loads((solo / CONFIG).read_text())
    assert cfg["config_sha256"] == solo_cfg["config_sha256"] and cfg["graph_sha256"] == solo_cfg["graph_sha256"]
    mine = [_strip(json.loads(x)) for x in (run_dir / "trace.jsonl").read_text().splitlines()]
    alone = [_strip(json.loads(x)) for x in (solo / "trace.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["dev"], r["prompts"]) for r in mine] == \
        [(r["iteration"], r["dev"], r["prompts"]) for r in alone]
    solo_res = json.loads((solo / "result.json").read_text())
    assert (res["dev_accuracy"], res["test_accuracy"], res["prompts"]) == \
        (solo_res["dev_accuracy"], solo_res["test_accuracy"], solo_res["prompts"])


def _slow_probe(monkeypatch, seconds: float) -> None:
    """Widen the window between a run's first file and its last (a slow disk, a slow backend probe): the writes of
    a run's first files must be invisible to, and safe from, every other run however long they take."""
    import dlc.app.training as training

    real = training.backend_info

    def slow(*a, **k):
        time.sleep(seconds)
        return real(*a, **k)

    monkeypatch.setattr(training, "backend_info", slow)


@pytest.mark.skipif(not DATA.is_dir(), reason="no data directory")
def test_racing_fits_into_one_run_dir_exactly_one_wins_with_its_own_files(tmp_path, monkeypatch):
    seeds = [11, 12, 13, 14, 15, 16]
    solos = {}
    for s in seeds:
        solos[s] = tmp_path / f"solo-{s}"
        _fit(solos[s], s)
    for trial in range(4):
        run_dir = tmp_path / f"race-{trial}"
        if trial % 2:
            run_dir.mkdir()                  # an existing empty --run-dir is allowed too
        if trial >= 2:
            _slow_probe(monkeypatch, 0.3)
        won, lost = _race(run_dir, seeds, monkeypatch)
        assert len(won) == 1, (won, lost)
        for e in lost.values():
            assert isinstance(e, DlcUsageError) and e.code == "E130", repr(e)
        (seed, outcome), = won.items()
        assert outcome.run_dir == run_dir and outcome.result.seed == seed
        _assert_all_files_are_the_winners(run_dir, seed, solos[seed])
        # the losers left nothing behind: no temporary directories next to the run
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.skipif(not DATA.is_dir(), reason="no data directory")
def test_racing_processes_into_one_run_dir(tmp_path):
    run_dir = tmp_path / "race"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    go = tmp_path / "go"
    # every process imports dlc first, then waits for the same start signal
    code = ("import sys, time, os\nfrom dlc.cli import main\nimport dlc.app.training as t\n"
            "real = t.backend_info\nt.backend_info = lambda *a, **k: (time.sleep(0.3), real(*a, **k))[1]\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
            "sys.exit(main(sys.argv[1:]))\n")
    procs = []
    for seed in (21, 22, 23, 24):
        args = ["fit", str(REPO / "graphs" / "dln1.dln"), "--run-dir", str(run_dir), "--data-dir", str(DATA),
                "--no-cache", "--no-progress"]
        for k, v in {**SMALL, "fit.seed": str(seed)}.items():
            args += ["--set", f"{k}={v}"]
        procs.append((seed, subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=tmp_path,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    time.sleep(1.0)
    go.write_text("")
    results = []
    for seed, p in procs:
        out, err = p.communicate(timeout=120)
        results.append((seed, p.returncode, err))
    winners = [s for s, rc, _ in results if rc == 0]
    assert len(winners) == 1, results
    for s, rc, err in results:
        if rc != 0:
            assert rc == 1 and "E130" in err, err
    cfg = json.loads((run_dir / CONFIG).read_text())
    res = json.loads((run_dir / "result.json").read_text())
    assert cfg["seed"] == res["seed"] == winners[0]
    assert manifest.from_json(json.loads((run_dir / GRAPH).read_text())).fit.seed == winners[0]


def test_created_run_keeps_its_lock_until_training_takes_it(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r", populate=lambda r: r.write_json(CONFIG, {"x": 1}))
    with pytest.raises(DlcUsageError) as e:       # a `--resume` of the new run cannot slip in before training
        RunDir(run.path).lock().acquire()
    assert e.value.code == "E131"
    with run.lock():                              # the lock creation kept, handed over once
        with pytest.raises(DlcUsageError):
            RunDir(run.path).lock().acquire()
    with RunDir(run.path).lock():                 # released at the end of the with block
        pass


def test_a_failing_populate_leaves_nothing(tmp_path):
    def boom(r: RunDir) -> None:
        r.write_json(CONFIG, {"x": 1})
        raise DlcUsageError("no", code="E130")

    with pytest.raises(DlcUsageError):
        RunDir.create("n", explicit=tmp_path / "r", populate=boom)
    with pytest.raises(DlcUsageError):
        RunDir.create("n", root=tmp_path / "runs", populate=boom)
    assert not (tmp_path / "r").exists()
    assert list((tmp_path / "runs").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]


_KILLED_DURING_CREATION = """
import os, signal, sys
from dlc.artifacts.rundir import RunDir
def populate(r):
    r.write_json("config.json", {"half": True})
    (r.path / "graph.json").write_text('{"torn')
    os.kill(os.getpid(), signal.SIGKILL)
RunDir.create("n", explicit=sys.argv[1], root=sys.argv[2], populate=populate)
"""


@pytest.mark.parametrize("explicit", [True, False])
def test_kill_9_during_creation_leaves_a_reusable_place(tmp_path, explicit):
    runs = tmp_path / "runs"
    target = runs / "mine"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = _KILLED_DURING_CREATION if explicit else _KILLED_DURING_CREATION.replace("explicit=sys.argv[1], ", "")
    p = subprocess.run([sys.executable, "-c", code, str(target), str(runs)], env=env, timeout=60)
    assert p.returncode == -9
    # nothing under a final name: not listed as a run, not a half run that can be neither resumed nor reused
    assert not target.exists()
    assert [p.name for p in runs.iterdir() if not p.name.startswith(".")] == []
    assert list(iter_runs(runs)) == []
    leftovers = [p for p in runs.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and (leftovers[0] / LOCK).exists()
    # the place can be used at once (a fresh run), and an old leftover whose creator is dead is swept
    old = time.time() - 3600
    os.utime(leftovers[0], (old, old))
    run = RunDir.create("n", explicit=target if explicit else None, root=runs)
    assert run.path.is_dir() and not leftovers[0].exists()


def test_a_recent_leftover_with_a_live_creator_is_not_swept(tmp_path):
    runs = tmp_path / "runs"
    started = threading.Event()
    release = threading.Event()

    def slow(r: RunDir) -> None:
        started.set()
        release.wait(30)

    t = threading.Thread(target=lambda: RunDir.create("n", root=runs, populate=slow))
    t.start()
    assert started.wait(30)
    building = [p for p in runs.iterdir() if p.name.startswith(".")]
    old = time.time() - 3600
    os.utime(building[0], (old, old))       # old, but its lock is held: still being built
    RunDir.create("m", root=runs)
    assert building[0].exists()
    release.set()
    t.join(30)
    assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["m", "n"]


def test_lock_replaced_by_a_directory_is_e502(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r")
    (run.path / LOCK).unlink()
    (run.path / LOCK).mkdir()
    with pytest.raises(DlcArtifactError) as e:
        with run.lock():
            pass
    assert e.value.code == "E502" and "lock" in e.value.message

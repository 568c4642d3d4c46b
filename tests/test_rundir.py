"""Run directories: atomic writes, trace truncation after a crash, checkpoint validation, resume checks."""
from __future__ import annotations

import json
import os
import stat
import time

import pytest

from dlc.errors import DlcArtifactError, DlcUsageError
from dlc.artifacts.records import Checkpoint, IterationRecord
from dlc.artifacts.rundir import (CHECKPOINT, CONFIG, CONFIG_SCHEMA, GRAPH, TRACE, RunDir, atomic_write_json,
                        canonical_sha256, check_resumable, iter_runs, run_name)


def _config(run: RunDir, g: str = "g" * 64, c: str = "c" * 64) -> None:
    run.write_json(CONFIG, {"schema": CONFIG_SCHEMA, "net": "n", "graph_sha256": g, "config_sha256": c,
                            "fit": {"iters": 3}, "seed": 1})
    run.write_json(GRAPH, {"network": {"name": "n"}})


def test_atomic_write_leaves_no_temp_and_replaces(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    atomic_write_json(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_respects_the_umask(tmp_path):
    """Results are files like any other: a temp file's 0600 must not leak into result.json."""
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": object()})   # not serialisable: fails before the rename
    assert json.loads(p.read_text()) == {"x": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]


def test_run_name_and_collisions(tmp_path):
    when = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    assert run_name("my net/x", when) == "my_net_x-20260102-030405"
    a = RunDir.create("net", root=tmp_path, when=when)
    b = RunDir.create("net", root=tmp_path, when=when)
    assert a.path.name == "net-20260102-030405" and b.path.name == "net-20260102-030405-2"


def test_explicit_run_dir_never_reuses_a_nonempty_dir(tmp_path):
    d = tmp_path / "mine"
    RunDir.create("net", explicit=d)
    (d / "x").write_text("keep")
    with pytest.raises(DlcUsageError) as e:
        RunDir.create("net", explicit=d)
    assert e.value.code == "E130"
    assert (d / "x").read_text() == "keep"


def test_trace_truncation_drops_the_iteration_in_flight(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r")
    for i in range(3):
        run.append_trace(IterationRecord(iteration=i))
    with open(run.file(TRACE), "a") as f:
        f.write('{"iteration": 3, "torn')           # killed mid-write
    assert [r.iteration for r in run.trace()] == [0, 1, 2]
    assert run.truncate_trace(2) == 1
    assert [r.iteration for r in run.trace()] == [0, 1]
    assert run.file(TRACE).read_text().endswith("}\n")


def test_damaged_trace_line_in_the_middle_is_an_error(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r")
    run.file(TRACE).write_text('{"iteration": 0}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(DlcArtifactError) as e:
        run.trace()
    assert e.value.code == "E502"


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r")
    _config(run)
    assert run.checkpoint() is None
    run.write_checkpoint(Checkpoint(iteration=2, state={"iteration": 2}, usage={"calls": 5}, trace_records=2,
                                    graph_sha256="g" * 64, config_sha256="c" * 64))
    ck = run.checkpoint()
    assert ck.iteration == 2 and ck.trace_records == 2 and ck.usage == {"calls": 5}
    run.file(CHECKPOINT).write_text(run.file(CHECKPOINT).read_text()[:40])
    with pytest.raises(DlcArtifactError) as e:
        run.checkpoint()
    assert e.value.code == "E502" and "checkpoint.json" in str(e.value)


def test_open_rejects_non_run_dirs(tmp_path):
    with pytest.raises(DlcArtifactError) as e:
        RunDir.open(tmp_path / "nope")
    assert e.value.code == "E501"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlcArtifactError) as e:
        RunDir.open(tmp_path / "empty")
    assert e.value.code == "E501"            # no file of a run: not a run directory
    (tmp_path / "empty" / "trace.jsonl").write_text("")
    with pytest.raises(DlcArtifactError) as e:
        RunDir.open(tmp_path / "empty")
    assert e.value.code == "E502"            # a run's file without its config: a damaged run


def test_check_resumable(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r")
    _config(run)
    assert check_resumable(run, graph_sha256="g" * 64, config_sha256="c" * 64).net == "n"
    with pytest.raises(DlcArtifactError) as e:
        check_resumable(run, graph_sha256="x" * 64, config_sha256="c" * 64)
    assert e.value.code == "E503" and "graph changed" in e.value.message
    with pytest.raises(DlcArtifactError) as e:
        check_resumable(run, graph_sha256="g" * 64, config_sha256="x" * 64)
    assert e.value.code == "E504"
    # the hashes a network has had (identity.graph_identities): the run's among them is the same network
    assert check_resumable(run, graph_sha256=("n" * 64, "g" * 64), config_sha256="c" * 64).net == "n"
    with pytest.raises(DlcArtifactError) as e:
        check_resumable(run, graph_sha256=("n" * 64, "o" * 64), config_sha256="c" * 64)
    assert e.value.code == "E503" and f"now {'n' * 12})" in e.value.message
    # a checkpoint from another graph in this directory is corruption
    run.write_checkpoint(Checkpoint(iteration=1, state={}, usage={}, trace_records=1, graph_sha256="z" * 64,
                                    config_sha256="c" * 64))
    with pytest.raises(DlcArtifactError) as e:
        check_resumable(run, graph_sha256=None, config_sha256=None)
    assert e.value.code == "E502"


def test_config_file_corruption(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r")
    _config(run)
    run.file(CONFIG).write_text("{")
    with pytest.raises(DlcArtifactError) as e:
        RunDir.open(run.path).config()
    assert e.value.code == "E502"


def test_lock_is_exclusive_and_released(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r")
    with run.lock():
        with pytest.raises(DlcUsageError) as e:
            with RunDir(run.path).lock():
                pass
        assert e.value.code == "E131"
    with run.lock():
        pass


def test_canonical_sha256_ignores_key_order():
    assert canonical_sha256({"a": 1, "b": [1, 2]}) == canonical_sha256({"b": [1, 2], "a": 1})
    assert canonical_sha256({"a": 1}) != canonical_sha256({"a": 2})


def test_iter_runs_lists_only_run_dirs(tmp_path):
    a = RunDir.create("a", root=tmp_path)
    _config(a)
    (tmp_path / "junk").mkdir()
    assert [r.path for r in iter_runs(tmp_path)] == [a.path]
    assert list(iter_runs(tmp_path / "none")) == []

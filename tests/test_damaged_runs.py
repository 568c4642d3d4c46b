"""A damaged run directory is refused, not resumed (issue 16, "Damaged trace or checkpoint accepted"): every field
read back is validated — against its type, and the checkpoint, the trace and the config against each other — and a
damaged run is E502 with nothing in it changed. Scripted LM, small fits."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from dlc.app.training import fit
from dlc.artifacts.records import Checkpoint
from dlc.cli import main
from dlc.errors import DlcArtifactError
from dlc.train import trainer as tr

from conftest import DATA, REPO

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="no data directory")

SETS = {"fit.iters": "4", "fit.batch_size": "4", "fit.num_p_samples": "3", "fit.val_freq": "1",
        "data.train_size": "16", "data.dev_size": "8", "data.test_size": "12", "model.default.backend": "scripted"}
STEPS_BEFORE_INTERRUPT = 2


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run stopped (Ctrl-C) after two finished iterations: checkpoint at iteration 2, two trace records."""
    run = tmp_path_factory.mktemp("runs") / "run"
    real = tr.Trainer.step
    calls = {"n": 0}

    def step(self):
        calls["n"] += 1
        if calls["n"] > STEPS_BEFORE_INTERRUPT:
            raise KeyboardInterrupt
        return real(self)

    tr.Trainer.step = step
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(str(REPO / "graphs" / "dln1.dln"), overrides=SETS, run_dir=str(run), no_cache=True,
                data_dir=str(DATA), out=None, err=None, progress=False)
    finally:
        tr.Trainer.step = real
    ck = json.loads((run / "checkpoint.json").read_text())
    assert ck["iteration"] == 2 and ck["trace_records"] == 2
    return run


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def _resume(run: Path, capsys) -> tuple[int, str]:
    rc = main(["fit", "--resume", str(run), "--no-cache", "--no-progress", "--data-dir", str(DATA)])
    return rc, capsys.readouterr().err


def _edit_json(name: str, edit):
    def apply(run: Path) -> None:
        obj = json.loads((run / name).read_text())
        edit(obj)
        (run / name).write_text(json.dumps(obj))
    return apply


def _trace(edit):
    def apply(run: Path) -> None:
        (run / "trace.jsonl").write_text(edit((run / "trace.jsonl").read_text()))
    return apply


def _set(*path_value):
    *path, value = path_value

    def edit(obj):
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return edit


ATTACKS = {
    # the last record the checkpoint counts, half-written (one record lost)
    "half-written last record": _trace(lambda t: t[:t.rstrip("\n").rfind("\n") + 1]
                                       + t.rstrip("\n")[t.rstrip("\n").rfind("\n") + 1:][:40]),
    "last record removed": _trace(lambda t: "".join(t.splitlines(True)[:-1])),
    "emptied trace": _trace(lambda t: ""),
    "trace removed": lambda run: (run / "trace.jsonl").unlink(),
    "records reordered": _trace(lambda t: "".join(reversed(t.splitlines(True)))),
    "a record duplicated": _trace(lambda t: t + t.splitlines(True)[-1] + t.splitlines(True)[-1]),
    "trace_records=-5": _edit_json("checkpoint.json", _set("trace_records", -5)),
    "trace_records=1": _edit_json("checkpoint.json", _set("trace_records", 1)),
    "iteration=-1": _edit_json("checkpoint.json", _set("iteration", -1)),
    "state.iteration=10**6": _edit_json("checkpoint.json", _set("state", "iteration", 10**6)),
    "iteration=10**6 everywhere": lambda run: (_edit_json("checkpoint.json", _set("iteration", 10**6))(run),
                                               _edit_json("checkpoint.json", _set("state", "iteration", 10**6))(run)),
    "state.history cut": _edit_json("checkpoint.json", lambda c: c["state"].__setitem__("history",
                                                                                        c["state"]["history"][:1])),
    "graph.json schema v999": _edit_json("graph.json", _set("schema_version", 999)),
    "checkpoint not an object": lambda run: (run / "checkpoint.json").write_text("[1, 2]"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_damaged_run_is_refused_and_left_as_it_is(interrupted, tmp_path, capsys, attack):
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    ATTACKS[attack](run)
    before = _digest(run)
    rc, err = _resume(run, capsys)
    assert rc == 1 and "error[E502]" in err and "corrupted run directory" in err, err
    assert "Traceback" not in err
    assert _digest(run) == before                     # nothing written, nothing truncated


def test_the_intact_run_and_a_record_in_flight_still_resume(interrupted, tmp_path, capsys):
    """The checks leave the resume contract alone: an intact run resumes; so does one killed between the trace append
    and the checkpoint (one record more than the checkpoint counts), or in the middle of the append (a torn tail)."""
    full = tmp_path / "full"
    main(["fit", str(REPO / "graphs" / "dln1.dln"), *[a for k, v in SETS.items() for a in ("--set", f"{k}={v}")],
          "--run-dir", str(full), "--no-cache", "--no-progress", "--data-dir", str(DATA)])
    capsys.readouterr()
    third = (full / "trace.jsonl").read_text().splitlines(True)[2]
    for name, extra in (("intact", ""), ("in flight", third), ("torn", third[:35])):
        run = tmp_path / name
        shutil.copytree(interrupted, run)
        with open(run / "trace.jsonl", "a") as f:
            f.write(extra)
        rc, err = _resume(run, capsys)
        assert rc == 0, (name, err)
        ours = [json.loads(x) for x in (run / "trace.jsonl").read_text().splitlines()]
        ref = [json.loads(x) for x in (full / "trace.jsonl").read_text().splitlines()]
        assert [(r["iteration"], r["dev"], r["prompts"]) for r in ours] == \
            [(r["iteration"], r["dev"], r["prompts"]) for r in ref], name


@pytest.mark.parametrize("field,value", [("iteration", -1), ("trace_records", -5)])
def test_checkpoint_reader_refuses_negative_counts(field, value):
    obj = {"schema": Checkpoint.SCHEMA, "iteration": 2, "trace_records": 2, "graph_sha256": "g", "config_sha256": "c",
           "state": {"iteration": 2, "prompts": {}, "best_prompts": {}}}
    Checkpoint.from_json(obj)
    with pytest.raises(DlcArtifactError) as e:
        Checkpoint.from_json({**obj, field: value})
    assert e.value.code == "E502"
    with pytest.raises(DlcArtifactError) as e:
        Checkpoint.from_json({**obj, "state": {**obj["state"], "iteration": "2"}})
    assert e.value.code == "E502" and "'iteration' is not an int" in e.value.message

"""Typed run files (dlc.artifacts.records): exact JSON round trips, E502 on a missing or mistyped field, old files
without the later optional keys, unknown keys kept, and a real `dlc fit` run directory read back byte for byte."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dlc.app.training import class_report
from dlc.artifacts.canonical import pretty_json, strict
from dlc.artifacts.records import (CHECKPOINT_SCHEMA, CONFIG_SCHEMA, RESULT_SCHEMA, Baseline, Checkpoint, ClassReport,
                                   FitResult, IterationRecord, RunConfig, SplitPredictions)
from dlc.artifacts.rundir import CHECKPOINT, CONFIG, GRAPH, RESULT, TRACE, RunDir
from dlc.errors import DlcArtifactError
from dlc.train.evaluation import EvalResult
from dlc.report.stats import classification_report, learning_curve, report_from_counts

from conftest import DATA, REPO


def disk(obj):
    """What a file holds after a write: strict JSON (NaN -> null), parsed back."""
    return json.loads(pretty_json(obj))


CONFIG_JSON = {
    "schema": CONFIG_SCHEMA, "net": "dln1", "graph_name": "dln1", "dlc_version": "0.1.0",
    "created": "2026-11-30T18:56:11+00:00", "source_path": "dln1.dln", "artifact_path": None,
    "overrides": {"fit.iters": "2"}, "seed": 42, "data_dir": "/data", "argv": ["fit", "dln1.dln"],
    "graph_sha256": "g" * 64, "config_sha256": "c" * 64,
    "data_identity": {"train": {"n": 16, "sha256": "t" * 64}}, "task": "subj",
    "fit": {"iters": 2, "seed": 42}, "data": {"task": "subj"}, "models": {"default": {"backend": "scripted"}},
}
STATE = {"iteration": 2, "prompts": {"y": "p1"}, "best_prompts": {"y": "p0"}, "best_dev": 0.5, "patience": 1,
         "memory": [], "history": [], "done": False, "offsets": {"y": [0.1, -0.1]},
         "best_offsets": {"y": [0.25, -0.25]}, "best_scores": [1.0, 0.0]}
CHECKPOINT_JSON = {"schema": CHECKPOINT_SCHEMA, "iteration": 2, "state": STATE,
                   "usage": {"calls": 5, "prompt_tokens": 100, "completion_tokens": 20, "cache_hits": 0},
                   "trace_records": 2, "graph_sha256": "g" * 64, "config_sha256": "c" * 64, "written_at": 1.5}
# the shapes Trainer.step() writes: first validation, a trained step, a skipped step, backtracking, the final
# validation-only iteration, an early stop
TRACE_JSON = [
    {"iteration": 0, "dev": 0.5, "dev_score": -0.7, "baseline": True, "best_dev": 0.5, "tokens": 10,
     "prompts": {"y": "p0"}, "batch": ["a", "b"], "forward": {"x": 1}, "train_acc": 0.5, "elbo": -1.25,
     "layers": {"y": {"proposals": ["q"], "rejected": {"copy": 1}}}, "logp_penalty": 0.0,
     "offsets": {"y": [0.0, 0.0]}, "calibration": {"kept": False}},
    {"iteration": 1, "dev": None, "best_dev": 0.5, "tokens": 20, "prompts": {"y": "p0"}, "batch": ["c"],
     "forward": {}, "train_acc": 1.0, "skipped": "no errors in the batch", "elbo": None},
    {"iteration": 2, "dev": 0.25, "dev_score": -0.9, "comparison": {"accepted": False}, "improved": False,
     "backtracked": True, "best_dev": 0.5, "tokens": 30, "prompts": {"y": "p0"}, "train_acc": 0.0, "elbo": -2,
     "batch": [], "forward": {}, "layers": {}},
    {"iteration": 3, "dev": 0.75, "dev_score": -0.1, "comparison": {"accepted": True}, "improved": True,
     "best_dev": 0.75, "tokens": 40, "prompts": {"y": "p2"}},
    {"iteration": 4, "dev": None, "best_dev": None, "tokens": 50, "prompts": {"y": "p2"}, "train_acc": 0.5,
     "elbo": -1.0, "stopped": "token budget 50 reached"},
]
REPORT_JSON = {"accuracy": 0.5, "n": 4, "labels": ["a", "b", "c"],
               "per_class": {"a": {"accuracy": 0.5, "n": 2}, "b": {"accuracy": 0.5, "n": 2},
                             "c": {"accuracy": None, "n": 0}},
               "confusion": {"a": {"a": 1, "b": 1, "c": 0}, "b": {"a": 1, "b": 1, "c": 0}, "c": {"a": 0, "b": 0, "c": 0}}}
RESULT_JSON = {
    "schema": RESULT_SCHEMA, "net": "dln1", "seed": 42, "dev_accuracy": 0.5, "test_accuracy": None,
    "baseline": {"dev_accuracy": 0.25, "test_accuracy": None, "prompts": {"y": "p0"}},
    "prompts": {"y": "p2"}, "offsets": {"y": {"a": 0.25, "b": -0.25}}, "iterations": 4,
    "best_dev_during_training": 0.75, "usage": {"calls": 5, "prompt_tokens": 100, "completion_tokens": 20},
    "dev": REPORT_JSON, "test": None,
    "predictions": {"dev": {"ids": ["1", "2"], "targets": ["a", "b"], "baseline": ["b", "b"], "final": ["a", "b"]},
                    "test": None},
    "fit_dln": "runs/x/dln1.fit.dln", "finished_at": "2026-11-30T18:56:12+00:00",
}


# ------------------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("cls, obj", [(RunConfig, CONFIG_JSON), (Checkpoint, CHECKPOINT_JSON),
                                      (FitResult, RESULT_JSON), (ClassReport, REPORT_JSON)]
                         + [(IterationRecord, r) for r in TRACE_JSON])
def test_round_trip_is_exact(cls, obj):
    rec = cls.from_json(obj)
    assert disk(rec.to_json()) == obj
    assert disk(cls.from_json(disk(rec.to_json())).to_json()) == obj


def test_typed_fields_of_each_file():
    cfg = RunConfig.from_json(CONFIG_JSON)
    assert (cfg.net, cfg.seed, cfg.iters, cfg.overrides, cfg.argv) == ("dln1", 42, 2, {"fit.iters": "2"},
                                                                        ("fit", "dln1.dln"))
    ck = Checkpoint.from_json(CHECKPOINT_JSON)
    assert ck.best_prompts == {"y": "p0"} and ck.best_offsets == {"y": [0.25, -0.25]} and ck.best_dev == 0.5
    assert ck.tokens == 120 and not ck.done
    recs = [IterationRecord.from_json(r) for r in TRACE_JSON]
    assert [r.dev for r in recs] == [0.5, None, 0.25, 0.75, None]
    assert recs[0].baseline and recs[0].improved is None and recs[0].details["batch"] == ["a", "b"]
    assert recs[1].skipped and recs[1].elbo is None and recs[2].backtracked and recs[2].improved is False
    assert recs[4].stopped and recs[0].layers["y"]["rejected"] == {"copy": 1}
    res = FitResult.from_json(RESULT_JSON)
    assert res.baseline == Baseline(0.25, None, {"y": "p0"}) and res.test is None and res.tokens == 120
    assert res.dev is not None and math.isnan(res.dev.per_class["c"]["accuracy"])   # null on disk, NaN in memory
    assert res.predictions["dev"] == SplitPredictions(("1", "2"), ("a", "b"), ("b", "b"), ("a", "b"))


def test_learning_curve_reads_the_one_spelling():
    pts = learning_curve(IterationRecord.from_json(r) for r in TRACE_JSON)
    assert [p.train_accuracy for p in pts] == [0.5, 1.0, 0.0, None, 0.5]
    assert [p.elbo for p in pts] == [-1.25, None, -2, None, -1.0]
    # another spelling is not the train accuracy any more: it is kept as a detail
    odd = IterationRecord.from_json({"iteration": 0, "train_accuracy": 0.9})
    assert learning_curve([odd])[0].train_accuracy is None and odd.details == {"train_accuracy": 0.9}


def test_unknown_keys_are_kept():
    for cls, obj in ((RunConfig, CONFIG_JSON), (Checkpoint, CHECKPOINT_JSON), (FitResult, RESULT_JSON)):
        newer = {**obj, "from_a_newer_dlc": {"x": [1, 2]}}
        assert disk(cls.from_json(newer).to_json()) == newer


# ------------------------------------------------------------------------------------------------ damage: E502

def _without(obj, key):
    return {k: v for k, v in obj.items() if k != key}


@pytest.mark.parametrize("cls, obj, needle", [
    (RunConfig, _without(CONFIG_JSON, "graph_sha256"), "lacks 'graph_sha256'"),
    (RunConfig, {**CONFIG_JSON, "schema": "dlc/run-config/v0"}, "schema"),
    (RunConfig, {**CONFIG_JSON, "seed": "42"}, "'seed' is not an int"),
    (Checkpoint, _without(CHECKPOINT_JSON, "trace_records"), "lacks 'trace_records'"),
    (Checkpoint, {**CHECKPOINT_JSON, "state": {**STATE, "best_prompts": {"y": 3}}}, "'best_prompts'"),
    (Checkpoint, {**CHECKPOINT_JSON, "state": [1]}, "'state' is not an object"),
    (IterationRecord, _without(TRACE_JSON[0], "iteration"), "lacks 'iteration'"),
    (IterationRecord, {**TRACE_JSON[0], "dev": "0.5"}, "'dev' is not a number or null"),
    (IterationRecord, {**TRACE_JSON[0], "offsets": {"y": ["a"]}}, "'offsets'"),
    (FitResult, _without(RESULT_JSON, "dev_accuracy"), "lacks 'dev_accuracy'"),
    (FitResult, {**RESULT_JSON, "baseline": _without(RESULT_JSON["baseline"], "test_accuracy")}, "baseline lacks"),
    (FitResult, {**RESULT_JSON, "dev": _without(REPORT_JSON, "n")}, "dev lacks 'n'"),
    (FitResult, {**RESULT_JSON, "predictions": {"dev": {**RESULT_JSON["predictions"]["dev"], "final": ["a"]}}},
     "differ in length"),
    (FitResult, [RESULT_JSON], "not a JSON object"),
])
def test_missing_or_mistyped_field_is_e502(cls, obj, needle):
    with pytest.raises(DlcArtifactError) as e:
        cls.from_json(obj)
    assert e.value.code == "E502" and "corrupted run directory" in e.value.message and needle in e.value.message


def test_rundir_names_the_damaged_file(tmp_path):
    run = RunDir.create("n", explicit=tmp_path / "r")
    run.write_json(CONFIG, _without(CONFIG_JSON, "config_sha256"))
    run.write_json(RESULT, {**RESULT_JSON, "iterations": "4"})
    run.file(TRACE).write_text(json.dumps(TRACE_JSON[0]) + "\n" + json.dumps({"dev": 0.5}) + "\n")
    for read, name in ((run.config, CONFIG), (run.result, RESULT), (run.trace, TRACE)):
        with pytest.raises(DlcArtifactError) as e:
            read()
        assert e.value.code == "E502" and name in e.value.message
    assert "record 2" in str(pytest.raises(DlcArtifactError, run.trace).value)


# ------------------------------------------------------------------------------------------------ old files

def test_old_files_without_later_keys_still_read():
    # result.json of the first run directories: no offsets, no predictions
    old = _without(_without(RESULT_JSON, "offsets"), "predictions")
    res = FitResult.from_json(old)
    assert res.offsets == {} and res.predictions == {}
    cfg = RunConfig.from_json({"schema": CONFIG_SCHEMA, "net": "n", "graph_sha256": "g", "config_sha256": "c"})
    assert cfg.seed is None and cfg.iters is None and cfg.data_identity is None and cfg.argv == ()
    ck = Checkpoint.from_json({**_without(CHECKPOINT_JSON, "written_at"),
                               "state": {"iteration": 1, "prompts": {"y": "p"}, "best_prompts": {"y": "p"}}})
    assert ck.written_at is None and ck.best_offsets == {} and ck.best_dev is None
    rec = IterationRecord.from_json({"iteration": 3})
    assert (rec.dev, rec.tokens, rec.prompts, rec.offsets) == (None, None, {}, {})


# ------------------------------------------------------------------------------------------------ class reports

def test_class_report_uses_the_evaluations_counts():
    targets, preds = ["a", "a", "b", "b", "b"], ["a", "b", "b", "b", "a"]
    correct = [t == p for t, p in zip(targets, preds)]
    r = EvalResult(accuracy=0.6, predictions=preds, targets=targets, correct=correct, ids=list("12345"),
                   per_class={"a": 0.5, "b": 2 / 3}, confusion={"a": {"a": 1, "b": 1}, "b": {"b": 2, "a": 1}})
    rep = class_report(r, ["b", "a", "c"])
    assert disk(rep.to_json()) == disk(classification_report(targets, preds, ["b", "a", "c"]).to_json())
    assert rep.labels == ("b", "a", "c") and rep.confusion["a"] == {"b": 1, "a": 1, "c": 0}
    assert math.isnan(rep.per_class["c"]["accuracy"]) and rep.per_class["c"]["n"] == 0
    # the evaluation's own numbers win: a metric more lenient than exact match shows in the report
    lenient = report_from_counts(r.confusion, ["a", "b"], accuracy=0.8, per_class={"a": 1.0, "b": 2 / 3})
    assert lenient.accuracy == 0.8 and lenient.per_class["a"]["accuracy"] == 1.0
    # a generated output has no counts: exact-match statistics from the predictions
    gen = EvalResult(accuracy=1.0, predictions=["7"], targets=["7"], correct=[True], ids=["1"], per_class={},
                     confusion={})
    assert class_report(gen, ()).per_class == {"7": {"accuracy": 1.0, "n": 1}}


# ------------------------------------------------------------------------------------------------ a real run

@pytest.mark.skipif(not DATA.is_dir(), reason="needs the shared offline data")
def test_a_fit_run_directory_reads_back_exactly(tmp_path, monkeypatch, capsys):
    from dlc.cli import main

    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    Path("dln1.dln").write_text((REPO / "graphs" / "dln1.dln").read_text() + "\nmodel default { backend = scripted }\n")
    assert main(["fit", "dln1.dln", "--set", "fit.iters=3", "--set", "fit.batch_size=4", "--set",
                 "fit.num_p_samples=3", "--set", "data.train_size=16", "--set", "data.dev_size=8", "--set",
                 "data.test_size=12", "--data-dir", str(DATA), "--run-dir", "run", "--no-progress"]) == 0
    capsys.readouterr()
    run = RunDir.open("run")
    for name, obj in ((CONFIG, run.config()), (CHECKPOINT, run.checkpoint()), (RESULT, run.result())):
        assert obj is not None and strict(obj.to_json()) == json.loads(run.file(name).read_text()), name
    lines = run.file(TRACE).read_text().splitlines()
    assert [json.loads(x) for x in lines] == [strict(r.to_json()) for r in run.trace()]
    res, ck, cfg = run.result(), run.checkpoint(), run.config()
    assert res.iterations == ck.iteration == 3 and ck.done and len(lines) == ck.trace_records == 4
    assert res.dev is not None and res.dev.n == 8 and res.dev.accuracy == pytest.approx(res.dev_accuracy)
    assert cfg.iters == 3 and cfg.graph_sha256 == ck.graph_sha256 and run.file(GRAPH).is_file()


def test_result_stopped_is_optional():
    """Issue 17 Using-it 9: `stopped` round-trips when set and an old result.json without it reads as None."""
    assert FitResult.from_json(RESULT_JSON).stopped is None
    obj = {**RESULT_JSON, "stopped": "token budget 50 reached"}
    rec = FitResult.from_json(obj)
    assert rec.stopped == "token budget 50 reached" and "stopped" not in rec.extra and disk(rec.to_json()) == obj

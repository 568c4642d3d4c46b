"""`dlc fit / eval / run / runs / show RUN` end to end with the scripted LM: the run directory contract, exit codes,
bad input (one-line error, exit 1, nothing written), and the `.fit.dln` round trip.

The scripted LM is an ordinary backend: the tests fit a copy of graphs/dln1.dln with a `model default { backend =
scripted }` block (so its `.fit.dln` keeps the block), or pass `--set model.default.backend=scripted`."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlc import app as api
from dlc.artifacts.records import FitResult
from dlc.cli import main
from dlc.errors import DlcUsageError

from conftest import DATA, REPO
SCRIPTED_MODEL = "\nmodel default { backend = scripted }\n"
DLN1 = Path("dln1.dln")          # graphs/dln1.dln + SCRIPTED_MODEL, written into each test's directory
SMALL = ["--set", "fit.iters=2", "--set", "fit.batch_size=4", "--set", "fit.num_p_samples=3",
         "--set", "data.train_size=16", "--set", "data.dev_size=8", "--set", "data.test_size=12"]


@pytest.fixture(autouse=True)
def scripted(monkeypatch, tmp_path):
    monkeypatch.delenv("DLC_DATA_DIR", raising=False)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))     # the LLM cache of this test only
    monkeypatch.chdir(tmp_path)
    DLN1.write_text((REPO / "graphs" / "dln1.dln").read_text() + SCRIPTED_MODEL)


def dlc(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture()
def finished_run(capsys, tmp_path) -> Path:
    rc, out, err = dlc(capsys, "fit", str(DLN1), *SMALL, "--data-dir", str(DATA), "--no-progress")
    assert rc == 0, err
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("dln1-")
    assert f"run directory: runs/{runs[0].name}" in out
    return runs[0]


def test_fit_writes_the_run_directory_contract(finished_run, capsys):
    run = finished_run
    for f in ("graph.json", "source.dln", "config.json", "backend.json", "trace.jsonl", "checkpoint.json",
              "result.json", "dln1.fit.dln"):
        assert (run / f).is_file(), f
    res = json.loads((run / "result.json").read_text())
    assert set(res) >= {"dev_accuracy", "test_accuracy", "prompts", "usage"}
    assert 0.0 <= res["dev_accuracy"] <= 1.0 and 0.0 <= res["test_accuracy"] <= 1.0
    assert set(res["prompts"]) == {"y"}
    assert set(res["usage"]) >= {"calls", "prompt_tokens", "completion_tokens", "cache_hits"}
    assert res["usage"]["calls"] > 0
    # per-example predictions, initial and final prompts on the same ids: they reproduce both accuracies
    for split in ("dev", "test"):
        p = res["predictions"][split]
        assert len(p["ids"]) == len(set(p["ids"])) == len(p["targets"]) == len(p["baseline"]) == len(p["final"]) > 0
        for side, acc in (("final", res[f"{split}_accuracy"]), ("baseline", res["baseline"][f"{split}_accuracy"])):
            assert sum(t == y for t, y in zip(p["targets"], p[side])) / len(p["ids"]) == pytest.approx(acc)
    trace = [json.loads(x) for x in (run / "trace.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in trace] == [0, 1, 2]      # iters=2: two training steps, then final validation
    assert "layers" in trace[0] and "forward" in trace[0]     # candidates, scores, chosen prompt, forward outputs
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["seed"] == 42 and cfg["fit"]["iters"] == 2 and cfg["data"]["dev_size"] == 8
    assert cfg["overrides"]["fit.iters"] == "2"
    be = json.loads((run / "backend.json").read_text())
    assert be["default"]["backend"] == "scripted" and "prompt_logprobs" in be["default"]["capabilities"]
    ck = json.loads((run / "checkpoint.json").read_text())
    assert ck["trace_records"] == 3 and ck["state"]["done"] is True


def test_fit_dln_round_trip_compiles_and_evaluates_to_the_saved_accuracy(finished_run, capsys):
    res = json.loads((finished_run / "result.json").read_text())
    fit_dln = finished_run / "dln1.fit.dln"
    from dlc.lang.compiler import compile_file

    g = compile_file(fit_dln)
    assert g.prompts() == res["prompts"]
    assert (g.fit.iters, g.fit.batch_size, g.data.train_size, g.data.test_size) == (2, 4, 16, 12)   # the --set values
    src = DLN1.read_text().splitlines()
    new = fit_dln.read_text().splitlines()
    assert len(src) == len(new)                                   # set in place: the prompt, data and fit lines
    assert [i for i, (a, b) in enumerate(zip(src, new)) if a != b] == \
        [i for i, ln in enumerate(src) if ln.lstrip().startswith(("prompt", "data", "fit"))]
    for split, key in (("test", "test_accuracy"), ("dev", "dev_accuracy")):      # no --set needed any more
        rc, out, err = dlc(capsys, "eval", str(fit_dln), "--split", split, "--data-dir", str(DATA), "--json", "-")
        assert rc == 0, err
        rep = json.loads(out)
        assert rep["rows"][0]["accuracy"] == pytest.approx(res[key])
    # and the run directory itself evaluates to the same number, with the ± over seeds printed
    rc, out, err = dlc(capsys, "eval", str(finished_run), "--seeds", "13,42,25", "--data-dir", str(DATA))
    assert rc == 0, err
    assert f"mean {res['test_accuracy']:.4f} ± 0.0000" in out
    assert "confusion (rows: true, columns: predicted)" in out and "per class" in out


def test_run_runs_show(finished_run, capsys, monkeypatch):
    fit_dln = finished_run / "dln1.fit.dln"
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"x": "the movie is a delight"}\n\n{"id": 7, "x": "it rains"}\n'))
    rc, out, err = dlc(capsys, "run", str(fit_dln))
    assert rc == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == 2 and rows[1]["id"] == 7
    assert all(r["output"] in ("subjective", "objective") for r in rows)
    assert set(rows[0]["layers"]) == {"y"}
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"text": "no x here"}\n'))
    rc, out, err = dlc(capsys, "run", str(fit_dln))
    assert rc == 1 and "error[E123]" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO('not json\n'))
    rc, out, err = dlc(capsys, "run", str(fit_dln))
    assert rc == 1 and "error[E122]" in err

    rc, out, err = dlc(capsys, "runs")
    assert rc == 0 and finished_run.name in out and "done" in out
    rc, out, err = dlc(capsys, "runs", "--json")
    row = json.loads(out.splitlines()[0])
    res = json.loads((finished_run / "result.json").read_text())
    assert row["status"] == "done" and row["test_accuracy"] == res["test_accuracy"]

    rc, out, err = dlc(capsys, "show", str(finished_run))
    assert rc == 0, err
    assert "dev accuracy: first" in out and "learning_curve.png" in out
    assert (finished_run / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_dry_run_prints_plan_and_creates_nothing(capsys, tmp_path):
    rc, out, err = dlc(capsys, "fit", str(DLN1), *SMALL, "--data-dir", str(DATA), "--dry-run")
    assert rc == 0, err
    assert "LLM requests per training iteration" in out and "candidate_score" in out and "dry run" in out
    assert not (tmp_path / "runs").exists()
    rc, out, err = dlc(capsys, "fit", str(DLN1), *SMALL, "--set", "fit.iters=0", "--data-dir", str(DATA), "--dry-run")
    assert rc == 0, err
    assert "no training iterations" in out and "per training iteration" not in out and "candidate_score" not in out


def test_fit_with_no_argument_uses_the_last_compiled_network(capsys, tmp_path):
    rc, out, err = dlc(capsys, "fit", "--dry-run")
    assert rc == 1 and "error[E505]" in err and "dlc compile" in err
    assert dlc(capsys, "compile", str(DLN1))[0] == 0
    rc, out, err = dlc(capsys, "fit", "--data-dir", str(DATA), "--dry-run")
    assert rc == 0, err
    assert "network dln1" in out

def test_set_after_compile_recompiles_the_unchanged_source(capsys, tmp_path, monkeypatch):
    """The quickstart's hint (`dlc fit --set fit.seed=13` after `dlc compile`): --set on the compiled artifact
    compiles its recorded source again with the override, while that source is unchanged; else E103."""
    assert dlc(capsys, "compile", str(DLN1))[0] == 0
    for target in ([], [".dlc/dln1.json"]):
        rc, out, err = dlc(capsys, "fit", *target, "--set", "fit.iters=7", "--data-dir", str(DATA), "--dry-run")
        assert rc == 0, err
        assert "7 training iteration(s)" in out
    rc, out, err = dlc(capsys, "show", ".dlc/dln1.json", "--set", "fit.iters=7")
    assert rc == 0, err
    # from another directory: the relative source path is found next to .dlc/
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rc, out, err = dlc(capsys, "fit", "../.dlc/dln1.json", "--set", "fit.iters=7", "--data-dir", str(DATA),
                       "--dry-run")
    assert rc == 0 and "7 training iteration(s)" in out, err
    monkeypatch.chdir(tmp_path)
    # the source changed since compile: never a silently different network
    DLN1.write_text(DLN1.read_text() + "\n# edited\n")
    rc, out, err = dlc(capsys, "fit", "--set", "fit.iters=7", "--data-dir", str(DATA), "--dry-run")
    assert rc == 1 and "error[E103]" in err and "changed since it was compiled" in err and "Traceback" not in err
    DLN1.unlink()
    rc, out, err = dlc(capsys, "fit", "--set", "fit.iters=7", "--data-dir", str(DATA), "--dry-run")
    assert rc == 1 and "error[E103]" in err and "is not there" in err


@pytest.mark.parametrize("args, code", [
    (["--data-dir", "/nonexistent/dlc-data"], "E801"),                       # missing data dir
    (["--data-dir", str(DATA), "--set", "data.task=subjj"], "E"),            # unknown task
    (["--data-dir", str(DATA), "--set", "fit.iters"], "E101"),               # malformed --set
    (["--data-dir", str(DATA), "--set", "fit.iterz=3"], "E1"),               # unknown key
])
def test_bad_input_is_one_error_exit_1_and_nothing_written(capsys, tmp_path, args, code):
    rc, out, err = dlc(capsys, "fit", str(DLN1), *args)
    assert rc == 1
    first = err.strip().splitlines()[0]
    assert f"error[{code}" in first and "Traceback" not in err
    assert not out.strip() or "plan:" not in out     # stopped before planning anything
    assert not (tmp_path / "runs").exists()


def test_field_mapping_naming_no_field(capsys, tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": f"s{i}", "label": "yes" if i % 2 else "no"}) + "\n"
                                              for i in range(30)))
    (tmp_path / "net.dln").write_text('network net\ninput x\nlayer y(x) {\n  template = classify\n'
                                      '  prompt = "Answer."\n  output = choice { yes: "yes", no: "no" }\n}\n'
                                      'output y { target = label }\n'
                                      'data { path = "d.jsonl"  fields = { x: "sentence" } }\n' + SCRIPTED_MODEL)
    rc, out, err = dlc(capsys, "fit", "net.dln")
    assert rc == 1 and "sentence" in err.splitlines()[0] and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    # with the right field the same file trains
    (tmp_path / "net.dln").write_text((tmp_path / "net.dln").read_text().replace('"sentence"', '"text"'))
    rc, out, err = dlc(capsys, "fit", "net.dln", "--set", "fit.iters=1", "--set", "fit.num_p_samples=2",
                       "--no-progress")
    assert rc == 0, err
    assert (tmp_path / "runs").is_dir()


def test_existing_run_dir_is_not_overwritten(capsys, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "keep.txt").write_text("x")
    rc, out, err = dlc(capsys, "fit", str(DLN1), *SMALL, "--data-dir", str(DATA), "--run-dir", str(d))
    assert rc == 1 and "error[E130]" in err
    assert [p.name for p in d.iterdir()] == ["keep.txt"]


def test_eval_and_cli_usage_errors(capsys, tmp_path):
    rc, out, err = dlc(capsys, "eval", str(tmp_path / "nope"))
    assert rc == 1 and "error[E104]" in err
    rc, out, err = dlc(capsys, "eval", str(DLN1), "--seeds", "1,x")
    assert rc == 1 and "error[E111]" in err
    (tmp_path / "broken").mkdir()
    rc, out, err = dlc(capsys, "eval", str(tmp_path / "broken"))
    assert rc == 1 and "error[E501]" in err          # an empty directory never was a run (a damaged one is E502)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--no-such-flag"])
    assert e.value.code == 2


def test_parse_sets_and_seeds():
    # the key is stripped, the value kept as typed (the compiler parses it: one graph hash under every command)
    assert api.parse_sets(["fit.iters=3", "data.task = subj", "fit.iters=4"]) == {"fit.iters": "4",
                                                                                 "data.task": " subj"}
    assert api.parse_sets(["layer.y.prompt=a=b"]) == {"layer.y.prompt": "a=b"}
    for bad in ("iters=3", "fit.iters", "=3", ".x=1"):
        with pytest.raises(DlcUsageError):
            api.parse_sets([bad])
    assert api.parse_seeds("13,42, 25") == (13, 42, 25)
    with pytest.raises(DlcUsageError):
        api.parse_seeds("1,1")


def test_scripted_is_an_ordinary_backend_with_a_delay_setting(capsys, tmp_path):
    """`backend = scripted` compiles, round-trips through the manifest (delay included) and opens through the
    registry behind the cache; `delay` belongs to the scripted backend only."""
    from dlc.artifacts import manifest
    from dlc.lang.compiler import compile_file
    from dlc.lm.cached import CachedLM
    from dlc.lm.registry import open_lm
    from dlc.lm.scripted import ScriptedLM

    g = compile_file(REPO / "graphs" / "dln1.dln", {"model.default.backend": "scripted",
                                                     "model.default.delay": "0.01"})
    cfg = g.models["default"]
    assert (cfg.backend, cfg.delay) == ("scripted", 0.01)
    assert manifest.from_json(json.loads(json.dumps(manifest.to_json(g)))).models == g.models
    lm = open_lm(cfg, cache_dir=tmp_path / "c")
    try:
        assert isinstance(lm, CachedLM) and isinstance(lm.inner, ScriptedLM) and lm.inner.delay == 0.01
        assert lm.model_id == "scripted:default"
    finally:
        lm.close()
    rc, out, err = dlc(capsys, "compile", str(REPO / "graphs" / "dln1.dln"), "--set", "model.default.delay=1")
    assert rc == 1 and "error[E312]" in err and "scripted backend only" in err
    rc, out, err = dlc(capsys, "compile", str(REPO / "graphs" / "dln1.dln"), "--set", "model.default.backend=scripted",
                       "--set", "model.default.batch_rows=4")
    assert rc == 1 and "error[E312]" in err and "embedded backend only" in err
    rc, out, err = dlc(capsys, "compile", str(REPO / "graphs" / "dln1.dln"), "--set", "model.default.backend=scripted",
                       "--set", "model.default.scoring=merged")
    assert rc == 1 and "error[E312]" in err and "`scoring` is a setting of the embedded backend only" in err
    rc, out, err = dlc(capsys, "compile", str(REPO / "graphs" / "dln1.dln"), "--set", "model.default.scoring=fast")
    assert rc == 1 and "error[E314]" in err and "exact, merged" in err
    rc, out, err = dlc(capsys, "compile", str(REPO / "graphs" / "dln1.dln"), "--set", "model.default.backend=scripte")
    assert rc == 1 and "error[E314]" in err and "scripted" in err


def test_console_script_exit_status_in_a_subprocess(tmp_path):
    """The real process: `python -m dlc fit` with a bad data dir exits 1 with one error line."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "dlc", "fit", str(REPO / "graphs" / "dln1.dln"),
                        "--set", "model.default.backend=scripted", "--data-dir", str(tmp_path / "none")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("error[E801]") and "Traceback" not in r.stderr


def test_unfinished_and_corrupted_runs_are_listed_and_shown(finished_run, capsys, tmp_path):
    (finished_run / "result.json").unlink()
    rc, out, err = dlc(capsys, "runs", "--json")
    row = json.loads(out.splitlines()[0])
    assert row["status"] == "incomplete" and row["done_iters"] == 2
    rc, out, err = dlc(capsys, "show", str(finished_run))
    assert rc == 0 and "not finished" in out and f"dlc fit --resume {finished_run}" in out
    (finished_run / "config.json").write_text("{broken")
    rc, out, err = dlc(capsys, "runs")
    assert rc == 0 and "corrupted" in out
    rc, out, err = dlc(capsys, "show", str(finished_run))
    assert rc == 1 and "error[E502]" in err and "config.json" in err


def test_a_token_budget_stop_is_reported_in_the_output_result_and_runs(capsys, tmp_path):
    """Issue 17 Using-it 9: a fit that `budget_tokens` ends early says so: in its output, result.json and `dlc runs`."""
    rc, out, err = dlc(capsys, "fit", str(DLN1), *SMALL, "--set", "fit.iters=3", "--set", "fit.budget_tokens=1",
                       "--data-dir", str(DATA), "--no-progress")
    assert rc == 0, err
    assert "stopped early after 1 of 3 training iteration(s): token budget 1 reached" in out
    run = next((tmp_path / "runs").iterdir())
    res = json.loads((run / "result.json").read_text())
    assert res["iterations"] == 1 and res["stopped"] == "token budget 1 reached"
    assert FitResult.from_json(res).stopped == "token budget 1 reached"
    rc, out, err = dlc(capsys, "runs", "--json")
    row = json.loads(out.splitlines()[0])
    assert row["stopped"] == "token budget 1 reached" and (row["done_iters"], row["iters"]) == (1, 3)
    rc, out, err = dlc(capsys, "runs")
    assert "stopped" in out and "token budget 1 reached" in out
    rc, out, err = dlc(capsys, "show", str(run))
    assert rc == 0 and "after 1 of 3 iterations: token budget 1 reached" in out
    # a run that did all its iterations has no `stopped` key (and old result.json files without it still read)
    del res["stopped"]
    (run / "result.json").write_text(json.dumps(res))
    rc, out, err = dlc(capsys, "runs", "--json")
    assert "stopped" not in json.loads(out.splitlines()[0])


def test_help_texts_have_no_internals():
    """Issue 17 Using-it 7: no "%%", issue numbers or internal module names in any `--help`."""
    import argparse
    import re

    from dlc.cli import build_parser

    def parsers(p):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    yield from parsers(sub)

    for p in parsers(build_parser()):
        text = p.format_help()
        assert "%%" not in text, p.prog
        assert not re.search(r"\bissue \d", text, re.I), p.prog
        assert not re.search(r"\bdlc\.[a-z_]+\.", text), p.prog


def test_progress_counts_the_iterations_runs_reports(capsys, tmp_path):
    """Issue 17 Using-it 7: for iters = 2 the progress says 1/2, 2/2 (then the final validation), as `dlc runs` does."""
    rc, out, err = dlc(capsys, "fit", str(DLN1), *SMALL, "--data-dir", str(DATA))
    assert rc == 0, err
    counts = [line.split("iteration ")[1].split()[0] for line in err.splitlines() if "] iteration " in line]
    assert counts == ["1/2", "2/2", "2/2"] and "final validation" in err.splitlines()[-1]
    rc, out, err = dlc(capsys, "runs", "--json")
    row = json.loads(out.splitlines()[0])
    assert (row["done_iters"], row["iters"]) == (2, 2)


def test_ctrl_c_says_interrupted_once_and_resuming_a_finished_run_formats_its_result(capsys, tmp_path, monkeypatch):
    """Issue 17 Using-it 7: Ctrl-C during `dlc fit` prints one "interrupted" line (with the resume command), and
    resuming a finished run prints the end of a fit (4-decimal accuracies), not raw floats."""
    from dlc.train import trainer as tr

    real, calls = tr.Trainer.step, {"n": 0}

    def step(self):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(tr.Trainer, "step", step)
    rc, out, err = dlc(capsys, "fit", str(DLN1), *SMALL, "--data-dir", str(DATA), "--no-progress")
    assert rc == 130 and err.count("interrupted") == 1 and "dlc fit --resume runs/" in err
    monkeypatch.setattr(tr.Trainer, "step", real)
    run = next((tmp_path / "runs").iterdir())
    rc, out, err = dlc(capsys, "fit", "--resume", str(run), "--no-progress")
    assert rc == 0, err
    rc, out, err = dlc(capsys, "fit", "--resume", str(run), "--no-progress")
    assert rc == 0 and "already finished" in out
    res = json.loads((run / "result.json").read_text())
    assert f"dev accuracy  {res['baseline']['dev_accuracy']:.4f} -> {res['dev_accuracy']:.4f}" in out
    assert f"test accuracy {res['baseline']['test_accuracy']:.4f} -> {res['test_accuracy']:.4f}" in out
    assert f"learned network: {run}/dln1.fit.dln" in out


def test_runs_are_named_after_the_network_and_runs_does_not_cut_names(capsys, tmp_path):
    """Issue 17 Using-it 6: `lang.dln` holding `network langtest` gives runs/langtest-... and langtest.fit.dln, as its
    artifact is .dlc/langtest.json (from the source and from the compiled artifact); `dlc runs` in a pipe keeps long
    run names whole."""
    Path("lang.dln").write_text(DLN1.read_text().replace("network dln1", "network langtest", 1))
    sets = ["--set", "fit.iters=0", "--set", "data.dev_size=4", "--set", "data.test_size=4"]
    rc, out, err = dlc(capsys, "fit", "lang.dln", *sets, "--data-dir", str(DATA), "--no-progress")
    assert rc == 0, err
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("langtest-") and (run / "langtest.fit.dln").is_file()
    assert json.loads((run / "result.json").read_text())["net"] == "langtest"
    rc, out, err = dlc(capsys, "compile", "lang.dln", *sets)
    assert rc == 0 and (tmp_path / ".dlc" / "langtest.json").is_file()
    rc, out, err = dlc(capsys, "fit", "--data-dir", str(DATA), "--no-progress")       # the last compiled network
    assert rc == 0, err
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "runs").iterdir()) == ["langtest", "langtest"]
    long_dir = "runs/" + "a-very-long-run-directory-name-" * 5 + "end"
    rc, out, err = dlc(capsys, "fit", "--run-dir", long_dir, "--data-dir", str(DATA), "--no-progress")
    assert rc == 0, err
    rc, out, err = dlc(capsys, "runs")
    assert rc == 0 and Path(long_dir).name in out and run.name in out


@pytest.mark.skipif(not DATA.is_dir(), reason="no data directory (../shared/data)")
def test_eval_set_on_a_run_changes_only_what_it_names(capsys, tmp_path):
    """`dlc eval RUN --set X` starts from the run's own resolved settings — the --set values it was fitted with and
    those of the artifact it was fitted from — and says what X changed (it used to rebuild the run from its source
    with X alone: a scripted/tiny run was re-evaluated on the default model with the source's test size)."""
    plain = Path("plain.dln")
    plain.write_text((REPO / "graphs" / "dln1.dln").read_text())
    scripted_small = ["--set", "model.default.backend=scripted", *SMALL]
    # settings given to `dlc compile`: the run's source does not hold them, its graph.json does
    assert dlc(capsys, "compile", str(plain), *scripted_small)[0] == 0
    rc, out, err = dlc(capsys, "fit", "--run-dir", "runs/compiled", "--data-dir", str(DATA), "--no-progress")
    assert rc == 0, err
    rc, out, err = dlc(capsys, "eval", "runs/compiled", "--set", "fit.seed=13", "--json", "-")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["changed"] == {"runs/compiled": ["fit.seed: 42 -> 13"]}
    assert [r["n"] for r in rep["rows"]] == [12]                      # the run's test size, not the source's
    # a model or layer key changes that field only: the model stays the run's scripted one
    rc, out, err = dlc(capsys, "eval", "runs/compiled", "--set", "model.default.timeout=60", "--set",
                       "layer.y.max_tokens=7", "--json", "-")
    assert rc == 0, err
    assert json.loads(out)["changed"] == {"runs/compiled": ["model.default.timeout: 120.0 -> 60.0",
                                                            "layer.y.max_tokens: 256 -> 7"]}
    # settings given to `dlc fit --set`, and a change the user asks for
    rc, out, err = dlc(capsys, "fit", str(plain), *scripted_small, "--run-dir", "runs/fitted", "--data-dir", str(DATA),
                       "--no-progress")
    assert rc == 0, err
    rc, out, err = dlc(capsys, "eval", "runs/fitted", "--set", "data.test_size=6")
    assert rc == 0, err
    assert "runs/fitted: the run's own settings, with --set changing data.test_size: 12 -> 6" in out
    assert "model.default" not in out                                  # still the scripted model of the run
    rc, out, err = dlc(capsys, "eval", "runs/fitted", "--set", "fit.seed=42", "--json", "-")
    assert json.loads(out)["changed"] == {"runs/fitted": []}


def test_run_takes_set_on_top_of_the_run(finished_run, capsys, monkeypatch):
    """`dlc run RUN --set`: the run's own settings with the --set applied, what changed said on stderr; a bad value
    is the compiler's error."""
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"x": "the movie is a delight"}\n'))
    rc, out, err = dlc(capsys, "run", str(finished_run), "--set", "fit.seed=13", "--no-layers")
    assert rc == 0, err
    assert f"{finished_run}: the run's own settings, with --set changing fit.seed: 42 -> 13" in err
    assert json.loads(out)["output"] in ("subjective", "objective")
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"x": "it rains"}\n'))
    rc, out, err = dlc(capsys, "run", str(finished_run), "--set", "model.default.backend=scriptd")
    assert rc == 1 and "error[E314]" in err and out == ""


def test_fit_dln_carries_the_runs_settings_and_data_path_to_any_directory(capsys, tmp_path, monkeypatch):
    """`<net>.fit.dln` reproduces the run's accuracy when evaluated from anywhere: the settings --set gave at compile
    and fit time are written into it, and a data path given relative to the source is written absolute (it would
    otherwise be read relative to the run directory)."""
    rows = [{"text": f"sentence {i} is {'great fun' if i % 2 else 'a fact'}", "label": ("objective", "subjective")[i % 2]}
            for i in range(40)]
    (tmp_path / "proj" / "data").mkdir(parents=True)
    (tmp_path / "proj" / "data" / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    net = tmp_path / "proj" / "mine.dln"
    net.write_text((REPO / "graphs" / "dln1.dln").read_text().replace('task = "subj"', 'path = "data/mine.jsonl"'))
    monkeypatch.chdir(tmp_path / "proj")
    assert dlc(capsys, "compile", "mine.dln", "--set", "model.default.backend=scripted", "--set",
               "layer.y.temperature=0.5")[0] == 0
    rc, out, err = dlc(capsys, "fit", "--set", "fit.iters=1", "--set", "fit.batch_size=4", "--set",
                       "fit.num_p_samples=2", "--set", "data.train_size=12", "--set", "data.dev_size=8",
                       "--set", "data.test_size=10", "--run-dir", "runs/r", "--no-progress")
    assert rc == 0, err
    res = json.loads((tmp_path / "proj" / "runs" / "r" / "result.json").read_text())
    text = (tmp_path / "proj" / "runs" / "r" / "dln1.fit.dln").read_text()
    assert "not written back" not in text
    assert f'path = "{tmp_path / "proj" / "data" / "mine.jsonl"}"' in text and "model default {" in text
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, out, err = dlc(capsys, "eval", str(tmp_path / "proj" / "runs" / "r" / "dln1.fit.dln"), "--json", "-")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["rows"][0]["n"] == 10 and rep["rows"][0]["accuracy"] == pytest.approx(res["test_accuracy"])


def test_on_top_of_run_keeps_the_runs_settings_and_applies_each_kind_of_key():
    """The merge behind `--set` on a run or compiled artifact: settings the source does not have (given to `dlc
    compile --set`) survive; fit, model and simple layer keys change one field; a nested backward key takes the
    rebuilt layer with the run's prompt."""
    from dlc.app.targets import on_top_of_run, setting_changes
    from dlc.lang.compiler import compile_source

    src, path = (REPO / "graphs" / "dln2.dln").read_text(), str(REPO / "graphs" / "dln2.dln")
    art = compile_source(src, path, {"model.default.backend": "scripted", "layer.h.temperature": "0.3",
                                     "layer.h.prompt": "Think."})
    new = {"fit.seed": "5", "model.default.timeout": "60", "layer.y.max_tokens": "7",
           "layer.h.backward.posterior": "edit"}
    g = on_top_of_run(art, compile_source(src, path, new), new)
    assert g.models["default"].backend == "scripted" and g.models["default"].timeout == 60
    assert g.fit.seed == 5 and g.layers["y"].generation.max_tokens == 7
    assert [c.template.name for c in g.layers["h"].backward.posterior] == ["edit"]
    assert g.layers["h"].prompt == "Think."                        # the run's prompt, not the source's
    assert g.layers["h"].generation.temperature == 0.3             # and its other compile-time settings
    assert "fit.seed: 42 -> 5" in setting_changes(art, g)

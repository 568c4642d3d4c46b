"""The README's Python API example, executed as written (tiny model, the shared data directory): compile, fit,
evaluate and predict return typed results that agree with each other."""
from __future__ import annotations

import re

import pytest

import dlc
from conftest import DATA, REPO

pytestmark = pytest.mark.model


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- example: python-api -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has no python-api example"
    return m.group(1)


@pytest.mark.skipif(not DATA.is_dir(), reason="no data directory (../shared/data)")
def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLC_DATA_DIR", str(DATA))
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "dln1.dln").write_text((REPO / "graphs" / "dln1.dln").read_text())
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_example(), "README.md:python-api", "exec"), scope)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "('y',) fit"
    outcome, report, rows = scope["outcome"], scope["report"], scope["rows"]
    assert isinstance(outcome, dlc.FitOutcome) and isinstance(report, dlc.EvalReport)
    assert isinstance(scope["graph"], dlc.Graph)
    assert report.rows[0]["accuracy"] == pytest.approx(outcome.result.test_accuracy)
    assert rows[0]["output"] in ("subjective", "objective") and out[-1] == rows[0]["output"]
    assert (tmp_path / "runs" / "api-demo" / "result.json").is_file()


def test_import_dlc_loads_no_backend():
    import subprocess
    import sys

    code = "import sys, dlc; print(sorted(m for m in ('llama_cpp', 'fastapi', 'uvicorn', 'openai', 'numpy') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_inputs_read_as_a_data_files_fields() -> None:
    """`dlc run` stdin values that are not strings become the text a data file's field would (the text the network
    was trained on): null "", true "true", 2.0 "2", a list as JSON. Was Python's str(): "None", "True", "['a']"."""
    from dlc.app.infer import _example
    from dlc.lang.compiler import compile_source

    g = compile_source("input x\nlayer y(x)\noutput y\n")
    for value, shown in ((None, ""), (True, "true"), (2.0, "2"), (["a", 1], '["a", 1]'), ({"k": "v"}, '{"k": "v"}'),
                         ("as is", "as is")):
        assert _example(g, {"x": value}, 0, "stdin line 1").inputs["x"] == shown, value

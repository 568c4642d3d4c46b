"""`dlc compile` and `dlc show` through the real CLI entry point (main(argv) in-process, and one subprocess)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlc.artifacts import manifest
from dlc.cli import main
from dlc.commands.show import is_run_dir

from conftest import REPO as ROOT
DLN2 = ROOT / "graphs" / "dln2.dln"


@pytest.fixture()
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_compile_writes_default_artifact_and_last(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(DLN2), "--set", "fit.iters=3"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(Path(".dlc") / "dln2.json")
    g = manifest.read(cwd / out)
    assert g.fit.iters == 3 and g.name == "dln2"
    assert manifest.find_last(cwd) == (cwd / out).resolve()
    assert manifest.find_last() == (cwd / out).resolve()


def test_compile_output_option(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(DLN2), "-o", "build/net.json"]) == 0
    assert capsys.readouterr().out.strip() == "build/net.json"
    assert json.loads((cwd / "build" / "net.json").read_text())["network"]["name"] == "dln2"
    assert manifest.find_last(cwd) == (cwd / "build" / "net.json").resolve()


def test_a_compile_that_cannot_record_last_writes_nothing(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`.dlc` a regular file: the artifact used to be written to -o, then record_last died with FileExistsError
    (a traceback, exit 3). Now E506 before either is written."""
    (cwd / ".dlc").write_text("mine")
    assert main(["compile", str(DLN2), "-o", "out/x.json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error[E506]: cannot record the compiled network in .dlc/LAST: .dlc/LAST cannot be "
                          "created: .dlc is not a directory"), err
    assert "Traceback" not in err and not (cwd / "out").exists() and (cwd / ".dlc").read_text() == "mine"


def test_an_output_under_a_file_is_e506_naming_it(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "afile").write_text("")
    assert main(["compile", str(DLN2), "-o", "afile/x.json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error[E506]: cannot write afile/x.json: cannot be created: afile is not a directory"), err
    assert "hint: write it to a file in a writable directory (-o PATH)" in err


def test_usage_errors(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "nowhere.dln"]) == 1
    assert "error[E104]: no such file: nowhere.dln" in capsys.readouterr().err
    assert main(["compile", str(DLN2), "--set", "fit.iters"]) == 1
    assert "error[E101]" in capsys.readouterr().err
    assert main(["compile", str(DLN2), "--set", "fit.itres=3"]) == 1
    err = capsys.readouterr().err
    assert "error[E102]" in err and "did you mean 'fit.iters'?" in err
    # a directory that is not a run: E501 in every command that takes a run (was E104 here, E502 elsewhere)
    (cwd / "plain").mkdir()
    for cmd in (["show", "plain"], ["eval", "plain"], ["report", "plain"], ["fit", "--resume", "plain"]):
        assert main(cmd) == 1, cmd
        assert "error[E501]" in capsys.readouterr().err, cmd
    (cwd / "d.json").mkdir()                  # named like an artifact: still a directory that is not a run
    for cmd in (["show", "d.json"], ["eval", "d.json"]):
        assert main(cmd) == 1, cmd
        assert "error[E501]" in capsys.readouterr().err, cmd
    # one with a run's files but not its config: a damaged run (E502)
    (cwd / "plain" / "result.json").write_text("{}")
    assert main(["eval", "plain"]) == 1
    assert capsys.readouterr().err.startswith("error[E502]: corrupted run directory: plain has no graph.json")


@pytest.mark.parametrize("fmt,needle", [("text", "network dln2"), ("dot", 'digraph "dln2"'),
                                        ("mermaid", "flowchart LR"), ("json", '"schema_version"')])
def test_show_formats(cwd: Path, capsys: pytest.CaptureFixture[str], fmt: str, needle: str) -> None:
    assert main(["show", str(DLN2), "--format", fmt]) == 0
    assert needle in capsys.readouterr().out


def test_show_manifest_and_output_file(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(DLN2)]) == 0
    capsys.readouterr()
    assert main(["show", ".dlc/dln2.json", "-f", "mermaid", "-o", "g.mmd"]) == 0
    assert (cwd / "g.mmd").read_text().startswith("flowchart LR")


def test_run_dir_detection(tmp_path: Path) -> None:
    assert not is_run_dir(tmp_path)
    (tmp_path / "checkpoint.json").write_text("{}")
    assert is_run_dir(tmp_path)
    assert not is_run_dir(tmp_path / "checkpoint.json")


def test_subprocess_broken_file_exit_1_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dln"
    bad.write_text('input x\nlayer y(x) { template = clasify }\nlayer z(q)\noutput y\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "dlc", "compile", str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{bad}:2:25: error[E301]: unknown template 'clasify'" in proc.stderr
    assert "error[E302]: unknown node 'q'" in proc.stderr and "2 errors found" in proc.stderr

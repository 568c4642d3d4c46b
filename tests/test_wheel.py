"""The wheel ships the grammar and the template library: build it, install it into a fresh venv, and run
`dlc compile` on a copied example from a directory outside the repository."""
from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO as ROOT


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_wheel_in_fresh_venv(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="the wheel build needs hatchling (pip install -e '.[test]')")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
         cwd=tmp_path)
    (wheel,) = dist.glob("dlc-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    # dependencies (lark, jinja2, networkx ...) come from this interpreter's site-packages, appended *after* the
    # venv's own; dlc itself must come from the wheel (the repository is never on the path).
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    parents = [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "_parent_site.pth").write_text("\n".join(parents) + "\n", encoding="utf-8")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp_path)

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "graphs" / "dln2.dln", work / "dln2.dln")
    where = _run([str(py), "-c", "import dlc, dlc.resources as r; print(dlc.__file__); print(r.grammar_dir()); "
                  "print(r.templates_dir())"], cwd=work).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), where
    out = _run([str(venv / "bin" / "dlc"), "compile", "dln2.dln", "--set", "fit.iters=2"], cwd=work)
    assert out.stdout.strip() == str(Path(".dlc") / "dln2.json")
    assert (work / ".dlc" / "dln2.json").is_file() and (work / ".dlc" / "LAST").is_file()
    shown = _run([str(py), "-m", "dlc", "show", ".dlc/dln2.json"], cwd=work)
    assert "network dln2" in shown.stdout and "iters=2" in shown.stdout
    bad = work / "bad.dln"
    bad.write_text("input x\nlayer y(x) { template = clasify }\noutput y\n", encoding="utf-8")
    proc = subprocess.run([str(venv / "bin" / "dlc"), "compile", "bad.dln"], cwd=work, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "error[E301]" in proc.stderr and "Traceback" not in proc.stderr

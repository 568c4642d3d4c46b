"""The README's shell examples, executed as written: every `dlc compile` / `dlc show` / `dlc fit` line of a ```bash
block runs through the real CLI (in a scratch directory holding the repository's graphs/) and succeeds. `dlc fit`
runs with `--dry-run` (the plan, nothing trained: the full fits are the benchmarks' job), `dlc data fetch` is
replaced by the data directory the tests use, and `dlc serve`/`dlc selftest` have their own tests."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dlc.cli import main
from conftest import DATA, REPO

RUN_HERE = ("compile", "show", "fit")


def readme_commands() -> list[str]:
    """Each `dlc ...` command of the README's bash blocks (continuation lines joined, `&&` chains split, comments
    dropped), in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            out += [c.strip() for c in line.split("&&") if c.strip().startswith("dlc ")]
    return out


def test_the_readme_has_the_commands_this_test_runs():
    subs = [shlex.split(c)[1] for c in readme_commands()]
    assert subs.count("compile") >= 2 and "fit" in subs, subs


@pytest.mark.skipif(not DATA.is_dir(), reason="no data directory (../shared/data)")
def test_every_readme_compile_show_and_fit_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DLC_DATA_DIR", str(DATA))
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "graphs").symlink_to(REPO / "graphs")
    monkeypatch.chdir(tmp_path)
    ran = []
    for cmd in readme_commands():
        argv = shlex.split(cmd)[1:]
        if argv[0] not in RUN_HERE:
            continue
        if argv[0] == "fit":
            argv.append("--dry-run")
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 0, f"README: `{cmd}` exited {rc}:\n{err}"
        ran.append((argv[0], out))
    kinds = [k for k, _ in ran]
    assert kinds.count("compile") >= 2 and "fit" in kinds
    plan = dict(ran)["fit"]
    assert "quickstart" in plan and "dry run" in plan.lower(), plan

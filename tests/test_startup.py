"""`dlc compile` and `dlc show` start without the model backends, the server or the numpy-heavy fit/data layers.

Each check runs in a fresh interpreter: sys.modules of the test process already holds everything.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import GRAPHS, REPO

BACKENDS = ("llama_cpp", "fastapi", "uvicorn", "openai")
# what `dlc compile` / `dlc show` of a .dln must not load either: the engine, trainer, data loaders and LLM layer
HEAVY = BACKENDS + ("numpy", "dlc.engine", "dlc.train", "dlc.lm", "dlc.server", "dlc.app.training", "dlc.data.loader")


def _loaded(code: str, cwd: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=cwd, capture_output=True, text=True, timeout=120, env=_env())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


def _hits(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_importing_the_compile_and_show_commands_loads_no_backend(tmp_path):
    mods = _loaded("import dlc.commands.compile, dlc.commands.show", str(tmp_path))
    assert _hits(mods, BACKENDS) == []


def test_dlc_compile_and_show_load_no_backend_engine_or_numpy(tmp_path):
    net = GRAPHS / "quickstart.dln"
    code = (f"import contextlib, io\nfrom dlc.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['compile', {str(net)!r}, '-o', 'q.json']) == 0\n"
            f"    assert main(['show', {str(net)!r}]) == 0\n"
            f"    assert main(['show', 'q.json']) == 0")
    mods = _loaded(code, str(tmp_path))
    assert "dlc.lang.compiler" in mods and "dlc.report.viz" in mods   # it did compile and show
    assert _hits(mods, HEAVY) == []

"""Shared test paths and fixtures.

The paths are module constants (tests use them in `skipif` and `parametrize`, which run at import time) and the
same values as fixtures.

The paper's data files come from the data directory a user configures: `$DLC_DATA_DIR` (what `.ci/run` sets), else
the team's checkout next to the repository (../shared/data). When neither exists, every test of a module that uses
DATA is skipped with one reason line; with `DLC_REQUIRE_DATA=1` (set by `.ci/run`) a missing data directory is an
error instead, so CI can never pass by skipping them.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]          # the repository root (holds pyproject.toml)
GRAPHS = REPO / "graphs"                             # the example networks
DATA = Path(os.environ.get("DLC_DATA_DIR") or REPO.parent / "shared" / "data").resolve()   # may be absent
BROKEN = Path(__file__).resolve().parent / "broken"  # networks that must fail, with their `# expect:` lines


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def graphs_dir() -> Path:
    return GRAPHS


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("DLC_REQUIRE_DATA") == "1" and not DATA.is_dir():
        pytest.exit(f"DLC_REQUIRE_DATA=1 but the data directory {DATA} does not exist (set DLC_DATA_DIR)",
                    returncode=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"no data directory ({DATA}): set DLC_DATA_DIR or run `dlc data fetch all`")
    for item in items:
        if getattr(getattr(item, "module", None), "DATA", None) is not None:
            item.add_marker(skip)


# ------------------------------------------------------------------------------------------------ shared helpers

def bench_module(name: str) -> ModuleType:
    """bench/<name>.py loaded as a module `bench_<name>` (bench/ is a folder of scripts, not a package), each call a
    fresh copy so a test may patch its globals. Registered in sys.modules: dataclasses resolve string annotations
    through it."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def optional_package(name: str, require_env: str) -> ModuleType | None:
    """An optional extra's module, or None so its tests skip; with `require_env`=1 (set by .ci/run) a missing package
    is an error instead, so CI cannot pass by skipping the tests that need it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get(require_env) == "1":
            raise
        return None


def start_serve(*args: str) -> tuple[subprocess.Popen, str]:
    """Start `dlc serve ARGS` (1 thread) and wait for its one `listening on URL` line; (process, URL)."""
    env = {**os.environ, "DLC_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dlc", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"dlc serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split("listening on ", 1)[1].strip()


def stop_serve(proc: subprocess.Popen) -> int:
    """SIGTERM a `dlc serve` started by start_serve (by its PID) and return its exit status."""
    os.kill(proc.pid, signal.SIGTERM)
    return proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """An in-process `dlc serve` app on 127.0.0.1 over the deterministic stand-in model (tests/faultproxy.py)."""
    from dlc.server.app import Server, bind_socket, create_app
    from tests.faultproxy import ScriptedServable

    srv = Server(create_app(ScriptedServable(), "scripted", n_ctx=256), bind_socket("127.0.0.1", 0))
    url = srv.start()
    yield url
    srv.stop()

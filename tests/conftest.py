"""Shared test paths and fixtures.

The paths are module constants (tests use them in `skipif` and `parametrize`, which run at import time) and the
same values as fixtures.

The paper's data files come from the data directory a user configures: `$DLC_DATA_DIR` (what `.ci/run` sets), else
the team's checkout next to the repository (../shared/data). When neither exists, every test of a module that uses
DATA is skipped with one reason line; with `DLC_REQUIRE_DATA=1` (set by `.ci/run`) a missing data directory is an
error instead, so CI can never pass by skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

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

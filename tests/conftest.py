"""Shared test paths and fixtures.

The paths are module constants (tests use them in `skipif` and `parametrize`, which run at import time) and the
same values as fixtures. The offline data lives next to the repository: ../shared/data.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]          # the repository root (holds pyproject.toml)
GRAPHS = REPO / "graphs"                             # the example networks
DATA = REPO.parent / "shared" / "data"               # the shared offline datasets (may be absent)
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

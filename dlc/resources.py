"""Locate the grammar and the template library: inside the installed wheel (dlc/grammar, dlc/templates, mapped there
by the build backend) or, in a source checkout / editable install, at the repository's top level."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def _find(name: str) -> Path:
    packaged = resources.files("dlc") / name
    if packaged.is_dir():
        return Path(str(packaged))
    top = Path(__file__).resolve().parent.parent / name
    if top.is_dir():
        return top
    raise RuntimeError(f"dlc is installed without its {name}/ directory")


def grammar_dir() -> Path:
    return _find("grammar")


def templates_dir() -> Path:
    return _find("templates")

"""The error-code registry (dlc.errors.REGISTRY) against the source and the README.

Every code dlc can raise is registered once with its class and meaning, and the README's error tables list every
registered code exactly once. The source is scanned, not imported: a code is any string literal `"Ennn"` in dlc/
(raise sites `code="E..."`, the checker's `self.err("E...")` / `ck.error("E...")`, the parser's constants).
"""
from __future__ import annotations

import ast
import re
from collections import Counter, defaultdict
from pathlib import Path


from conftest import REPO
from dlc import errors
from dlc.errors import (REGISTRY, CODES, DlcArtifactError, DlcDataError, DlcError, DlcFitError, DlcGraphError,
                        DlcLMError, DlcSemanticError, DlcSyntaxError, DlcUsageError)

CODE = re.compile(r"E\d{3}")
FAMILY = {"1": DlcUsageError, "2": DlcSyntaxError, "3": DlcSemanticError, "4": DlcGraphError,
          "5": DlcArtifactError, "6": DlcLMError, "7": DlcFitError, "8": DlcDataError}
ERROR_CLASSES = {name for name, obj in vars(errors).items()
                 if isinstance(obj, type) and issubclass(obj, DlcError)} - {"CompileFailed"}  # wraps coded errors


def _sources() -> list[Path]:
    return sorted(p for p in (REPO / "dlc").rglob("*.py") if p != REPO / "dlc" / "errors.py")


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _scan() -> tuple[dict[str, list[str]], dict[str, set[tuple[str, str]]], list[str]]:
    """(code -> places it occurs, code -> {(class, place)} at raise sites, error calls without a code)."""
    used: dict[str, list[str]] = defaultdict(list)
    raised: dict[str, set[tuple[str, str]]] = defaultdict(set)
    no_code: list[str] = []
    for path in _sources():
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.fullmatch(node.value):
                used[node.value].append(f"{rel}:{node.lineno}")
            if not isinstance(node, ast.Call):
                continue
            name, where = _call_name(node), f"{rel}:{node.lineno}"
            if name in ERROR_CLASSES:                          # DlcXxxError(..., code="E...")
                code = next((k.value for k in node.keywords if k.arg == "code"), None)
                if code is None:
                    no_code.append(where)
                elif isinstance(code, ast.Constant) and isinstance(code.value, str):
                    raised[code.value].add((name, where))
            elif name in ("err", "error") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and CODE.fullmatch(node.args[0].value):
                cls = next((k.value.id for k in node.keywords if k.arg == "cls" and isinstance(k.value, ast.Name)),
                           "DlcSemanticError")                 # the checker's error(code, msg, span, cls=...)
                raised[node.args[0].value].add((cls, where))
    return used, raised, no_code


def _readme_table_codes() -> list[str]:
    """Codes in the README's error tables: rows whose first cell is a code family (`| E1xx |`, `| E35x |`, ...)
    and the Datasets section's "Errors are `E8xx`: ..." paragraph. `E620–E628` counts every code in the range."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    chunks = [line for line in text.splitlines() if re.match(r"\|\s*E\d[\dx]x\s*\|", line)]
    m = re.search(r"^Errors are `E8xx`:.*?(?:\n\n|\Z)", text, flags=re.S | re.M)
    assert m, "README: the Datasets section's 'Errors are `E8xx`:' paragraph is missing"
    chunks.append(m.group(0))
    codes: list[str] = []
    for chunk in chunks:
        for a, b in re.findall(r"E(\d{3})\s*[–-]\s*E(\d{3})", chunk):
            codes += [f"E{i}" for i in range(int(a) + 1, int(b))]  # the ends are found below
        codes += CODE.findall(chunk)
    return codes


def test_registry_has_each_code_once_with_its_family_class():
    counts = Counter(e.code for e in REGISTRY)
    assert [c for c, n in counts.items() if n > 1] == []
    assert len(CODES) == len(REGISTRY)
    for e in REGISTRY:
        assert CODE.fullmatch(e.code), e
        assert issubclass(e.cls, FAMILY[e.code[1]]), f"{e.code} is registered as {e.cls.__name__}"
        assert e.meaning and "\n" not in e.meaning, e
    assert errors.meaning("E301") == "unknown template" and errors.meaning("E999") is None


def test_every_code_in_the_source_is_registered_and_every_registered_code_is_used():
    used, _, no_code = _scan()
    unregistered = {c: places for c, places in used.items() if c not in CODES}
    assert unregistered == {}, "register these codes in dlc/errors.py REGISTRY (and the README's tables)"
    assert sorted(set(CODES) - set(used)) == [], "registered codes that nothing raises any more"
    # a class's default code (E100, E300, ...) is never what a user sees: every raise names its code
    assert no_code == [], "DlcError raised without code="


def test_each_code_is_raised_with_its_registered_class():
    _, raised, _ = _scan()
    wrong = sorted((code, cls, where) for code, sites in raised.items() for cls, where in sites
                   if code in CODES and not issubclass(getattr(errors, cls), CODES[code].cls))
    assert wrong == [], "a code is raised with a class other than its registered one"


def test_readme_tables_list_every_registered_code_once():
    documented = _readme_table_codes()
    twice = sorted(c for c, n in Counter(documented).items() if n > 1)
    assert twice == [], "codes listed more than once in the README's error tables"
    assert sorted(set(CODES) - set(documented)) == [], "registered codes missing from the README's error tables"
    assert sorted(set(documented) - set(CODES)) == [], "README error tables list codes that are not registered"

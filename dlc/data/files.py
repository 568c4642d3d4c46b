"""Custom datasets: JSONL / JSON / CSV / TSV files, and Hugging Face `datasets` (`hf:name[:config]`) when installed.

Layouts, in order of precedence:
1. `path` contains `{split}` (e.g. `data/{split}.jsonl`): one file per split; `dev` also looks for `validation`/
   `valid`, a missing dev or test file is carved out of train (rule 4).
2. `path` is a directory holding `train.*` (and optionally `dev.*`/`validation.*`, `test.*`): the same.
3. one file with a `split` column (train / dev|validation|valid / test): rows go to their split; a column one row
   has, every row must have (E820 names the first row without it).
4. one file without it: rows are shuffled once with a fixed seed (dlc.rng, seed 42 — independent of the run seed,
   like the paper's splits), then test = the first `test_size` rows (20% when -1), dev = the next `dev_size`
   (20% when -1), train = the rest.
Every value is turned into text (numbers as written, null as ""), so a label 1 and "1" are the same class.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterable

from dlc.data.splits import RawSplits, Record
from dlc.data.store import check_data_file, read_json, read_jsonl
from dlc.errors import DlcDataError
from dlc.rng import Rng

SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv")
_SPLIT_ALIASES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}
_SPLIT_VALUES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "test": "test"}
_HF_RE = re.compile(r"(?:^|[\\/])hf:(.+)$")


def hf_spec(path: str | None) -> str | None:
    """`name[:config]` if `path` names a Hugging Face dataset (also after a caller joined it to a directory)."""
    if not path:
        return None
    m = _HF_RE.search(path)
    return m.group(1) if m else None


def text(v: Any) -> str:
    """A field value as text: strings as is, numbers/bools as JSON writes them, null as "", lists/dicts as JSON."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 2**53 else json.dumps(v)
    return json.dumps(v, ensure_ascii=False)


STRUCTURED = "_structured"   # hidden record key: the fields of the row that held a JSON list or object


def _rows_to_records(rows: Iterable[dict[str, Any]]) -> list[Record]:
    """Rows as text records; the names of fields holding a list or object are kept under STRUCTURED, so that a
    target like ["pos"] is refused (E823) instead of being read as the label pos (an input may be JSON text)."""
    out = []
    for row in rows:
        rec = {str(k): text(v) for k, v in row.items()}
        nested = [str(k) for k, v in row.items() if isinstance(v, (list, dict))]
        if nested:
            rec[STRUCTURED] = ",".join(nested)
        out.append(rec)
    return out


def read_table(path: Path) -> list[Record]:
    """All rows of one JSONL/JSON/CSV/TSV file as text records."""
    if not path.exists():
        raise DlcDataError(f"dataset file {path} does not exist", code="E802",
                           hint="data.path is resolved relative to the .dln file")
    check_data_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _rows_to_records(read_jsonl(path))
    if suffix == ".json":
        doc = read_json(path)
        if isinstance(doc, dict) and isinstance(doc.get("examples"), list):
            doc = doc["examples"]
        if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
            raise DlcDataError(f"{path}: expected a JSON list of objects (or {{\"examples\": [...]}})",
                               code="E815", hint="or use one JSON object per line in a .jsonl file")
        return _rows_to_records(doc)
    if suffix in (".csv", ".tsv"):
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                if not reader.fieldnames:
                    raise DlcDataError(f"{path} is empty: expected a header row", code="E815",
                                       hint="the first line must name the columns")
                # (unnamed columns, as spreadsheets export trailing empty ones, are left alone)
                twice = sorted({c for c in reader.fieldnames if c and reader.fieldnames.count(c) > 1})
                if twice:                   # DictReader would keep the last column of a name and drop the others
                    raise DlcDataError(f"{path}:1: the header names the column(s) {', '.join(map(repr, twice))} "
                                       "more than once", code="E815", hint="give every column its own name")
                out: list[Record] = []
                n_cols = len(reader.fieldnames)
                for row in reader:
                    if None in row or None in row.values():       # DictReader: extra values / missing ones
                        n = n_cols + len(row.get(None) or ()) if None in row else \
                            sum(1 for v in row.values() if v is not None)
                        raise DlcDataError(f"{path}:{reader.line_num}: {n} value(s) for {n_cols} header columns",
                                           code="E822", hint="quote values that contain the delimiter, and give "
                                                             "every row a value (possibly empty) for each column")
                    out.append({k: text(v) for k, v in row.items()})
                return out
        except UnicodeDecodeError as e:
            raise DlcDataError(f"{path} is not UTF-8 text", code="E815", hint="save the file as UTF-8") from e
        except csv.Error as e:
            raise DlcDataError(f"{path}: malformed CSV ({e})", code="E815") from e
    raise DlcDataError(f"unsupported dataset file type '{path.suffix or path.name}'", code="E807",
                       hint=f"use one of {', '.join(SUFFIXES)} (or hf:name for a Hugging Face dataset)")


def _carve(pool: list[Record], dev_size: int, test_size: int, need_dev: bool, need_test: bool
           ) -> tuple[list[Record], list[Record], list[Record]]:
    """Split one pool into train/dev/test with a fixed-seed shuffle (rule 4 of the module docstring)."""
    order = list(range(len(pool)))
    Rng(42).derive("data", "carve").shuffle(order)
    rows = [pool[i] for i in order]
    n = len(rows)
    n_test = (test_size if test_size >= 0 else round(0.2 * n)) if need_test else 0
    n_dev = (dev_size if dev_size >= 0 else round(0.2 * n)) if need_dev else 0
    n_test, n_dev = min(n_test, n), min(n_dev, max(0, n - n_test))
    return rows[n_test + n_dev:], rows[n_test:n_test + n_dev], rows[:n_test]


def _fields(*splits: list[Record]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for split in splits:
        for rec in split:
            for k in rec:
                if k != STRUCTURED:
                    seen.setdefault(k, None)
    return tuple(seen)


def _find_split_file(pattern: str | None, folder: Path | None, split: str) -> Path | None:
    for alias in _SPLIT_ALIASES[split]:
        if pattern is not None:
            p = Path(pattern.replace("{split}", alias))
            if p.is_file():
                return p
        elif folder is not None:
            for suffix in SUFFIXES:
                p = folder / f"{alias}{suffix}"
                if p.is_file():
                    return p
    return None


def load_path(path: str | Path, dev_size: int = -1, test_size: int = -1) -> RawSplits:
    """A custom dataset from a file, a `{split}` pattern, or a directory (see the module docstring)."""
    spec = hf_spec(str(path))
    if spec is not None:
        return load_hf(spec, dev_size, test_size)
    p = str(path)
    if "{split}" in p or Path(p).is_dir():
        pattern, folder = (p, None) if "{split}" in p else (None, Path(p))
        files = {s: _find_split_file(pattern, folder, s) for s in ("train", "dev", "test")}
        if files["train"] is None:
            where = p.replace("{split}", "train") if pattern else f"{p}/train{{{','.join(SUFFIXES)}}}"
            raise DlcDataError(f"no training file: {where} does not exist", code="E802",
                               hint="a split layout needs at least a train file")
        train = read_table(files["train"])
        dev = read_table(files["dev"]) if files["dev"] else None
        test = read_table(files["test"]) if files["test"] else None
        if dev is None or test is None:
            train, c_dev, c_test = _carve(train, dev_size, test_size, dev is None, test is None)
            dev = c_dev if dev is None else dev
            test = c_test if test is None else test
        return RawSplits(train, dev, test, fields=_fields(train, dev, test))
    rows = read_table(Path(p))
    if not rows:
        raise DlcDataError(f"dataset file {p} has no rows", code="E812", hint="add examples to the file")
    first = next((i for i, r in enumerate(rows, 1) if "split" in r), None)
    if first is not None:
        # A split column is a property of the file: a row without it would otherwise be trained on whatever the
        # other rows say (or, missing from row 1, the whole column used to be ignored and test rows trained on).
        parts: dict[str, list[Record]] = {"train": [], "dev": [], "test": []}
        for i, r in enumerate(rows, 1):
            if "split" not in r:
                raise DlcDataError(f"{p}: row {i} has no 'split' value, but row {first} has one", code="E820",
                                   hint="a split column applies to every row: give each row split = train, dev "
                                        "or test (rows count from 1, without the header and blank lines)")
            s = _SPLIT_VALUES.get(r["split"].strip().lower())
            if s is None:
                raise DlcDataError(f"{p}: row {i} has split '{r['split']}'", code="E814",
                                   hint="the split column must be train, dev (or validation) or test")
            parts[s].append(r)
        train, dev, test = parts["train"], parts["dev"], parts["test"]
        if not dev or not test:
            train, c_dev, c_test = _carve(train, dev_size, test_size, not dev, not test)
            dev, test = dev or c_dev, test or c_test
        return RawSplits(train, dev, test, fields=tuple(k for k in _fields(rows) if k != "split"))
    train, dev, test = _carve(rows, dev_size, test_size, True, True)
    return RawSplits(train, dev, test, fields=_fields(rows))


def load_hf(spec: str, dev_size: int = -1, test_size: int = -1) -> RawSplits:
    """`hf:name[:config]` through Hugging Face `datasets` (an optional dependency)."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as e:
        raise DlcDataError(f"hf:{spec} needs the Hugging Face `datasets` package, which is not installed",
                           code="E808", hint="pip install datasets, or export the data to a .jsonl file") from e
    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None)
    except Exception as e:  # noqa: BLE001 - any loader failure is the user's dataset spec or their network
        raise DlcDataError(f"could not load Hugging Face dataset '{spec}': {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                           code="E809", hint="check the name and config (hf:name:config) and your network") from e
    found: dict[str, list[Record]] = {}
    for split in ("train", "dev", "test"):
        for alias in _SPLIT_ALIASES[split]:
            if alias in ds:
                found[split] = _rows_to_records(ds[alias])
                break
    if "train" not in found:
        raise DlcDataError(f"Hugging Face dataset '{spec}' has no train split (it has {', '.join(ds)})",
                           code="E814")
    train = found["train"]
    if "dev" not in found or "test" not in found:
        train, c_dev, c_test = _carve(train, dev_size, test_size, "dev" not in found, "test" not in found)
        found.setdefault("dev", c_dev)
        found.setdefault("test", c_test)
    return RawSplits(train, found["dev"], found["test"], fields=_fields(train, found["dev"], found["test"]))

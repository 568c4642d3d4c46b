"""Where task files live: the data directory, and reading its files with user-facing errors.

The layout is the one of the shared offline copy (shared/data/README.md): files keep their source repository's
paths under `<source>/`, e.g. `BIG-Bench-Hard/bbh/navigate.json`, so `--data-dir ../shared/data` just works and
`dlc data fetch` writes exactly the same tree.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlc import jsonread
from dlc.errors import DlcDataError
from dlc.textcheck import find_bad_text

ENV_DATA_DIR = "DLC_DATA_DIR"


def default_data_dir() -> Path:
    """The per-user cache location (`platformdirs.user_cache_dir("dlc") / "data"`)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("dlc")) / "data"


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The data dir and where it came from: `--data-dir`, then `$DLC_DATA_DIR`, then the user cache dir."""
    if explicit:
        return Path(explicit).expanduser(), "--data-dir"
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser(), f"${ENV_DATA_DIR}"
    return default_data_dir(), "the default cache dir"


def data_dir(explicit: str | os.PathLike[str] | None = None, *, must_exist: bool = True) -> Path:
    """The data directory: `explicit` (--data-dir), then env DLC_DATA_DIR, then platformdirs' user cache dir.

    With `must_exist`, a missing directory is a DlcDataError (E801) that says how to get the data.
    """
    path, origin = resolve_data_dir(explicit)
    if must_exist and not path.is_dir():
        why = "is not a directory" if path.exists() else "does not exist"
        raise DlcDataError(f"data directory {path} (from {origin}) {why}", code="E801",
                           hint="run `dlc data fetch TASK` to download a task, or pass --data-dir DIR "
                                f"(or set ${ENV_DATA_DIR})")
    return path


def require_files(task: str, root: Path, files: tuple[str, ...]) -> None:
    """Every file `task` reads must exist under `root` (E802 names the first missing one and the fix)."""
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DlcDataError(f"task '{task}' needs {root / missing[0]}, which is missing{more}", code="E802",
                           hint=f"run `dlc data fetch {task} --data-dir {root}` or pass the --data-dir that "
                                "holds it")


MAX_DATA_FILE = 256 * 1024 * 1024   # bytes; 18x the largest paper task file (BIG-bench hyperbaton, 14 MB)


def check_data_file(path: Path) -> None:
    """A data file must be a regular file (a FIFO would hang the read, /dev/zero fill memory) of at most
    MAX_DATA_FILE bytes (parsed rows take several times their size in memory): E802 / E821 before it is read."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise DlcDataError(f"cannot read {path}: {e.strerror}", code="E802") from e
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise DlcDataError(f"dataset file {path} is not a regular file", code="E802",
                           hint="data.path names a .jsonl, .json, .csv or .tsv file (or a directory of them)")
    if st.st_size > MAX_DATA_FILE:
        raise DlcDataError(f"dataset file {path} is {st.st_size / 2**20:,.0f} MiB, over the cap of "
                           f"{MAX_DATA_FILE // 2**20} MiB", code="E821",
                           hint="keep the rows you train and evaluate on (prompt learning needs hundreds, not "
                                "millions)")


def read_json(path: Path) -> Any:
    """A whole-file JSON document; a corrupt file is E815 (not a traceback)."""
    check_data_file(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            doc = jsonread.loads(f.read())
    except UnicodeDecodeError as e:
        raise DlcDataError(f"{path} is not UTF-8 text", code="E815", hint="save the file as UTF-8") from e
    except jsonread.BadJSON as e:
        raise DlcDataError(f"{path} is not valid JSON ({e.where()}{e.msg})", code="E815",
                           hint="fix the file; a fetched task file that is damaged is restored by deleting it and "
                                "running `dlc data fetch` again") from None
    except OSError as e:
        raise DlcDataError(f"cannot read {path}: {e.strerror}", code="E802") from e
    bad = find_bad_text(doc)
    if bad is not None:
        raise DlcDataError(f"{path}: {bad} holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape not in a "
                           "pair), which is not text", code="E815", hint="fix or remove that escape")
    return doc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-empty line; a bad line is E815 naming its line number."""
    rows: list[dict[str, Any]] = []
    check_data_file(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = jsonread.loads(line)
                except jsonread.BadJSON as e:
                    raise DlcDataError(f"{path}:{lineno}: not a JSON object ({e.msg})", code="E815",
                                       hint="every line of a .jsonl file must be one JSON object of text fields"
                                       ) from None
                bad = find_bad_text(row)
                if bad is not None:
                    raise DlcDataError(f"{path}:{lineno}: {bad} holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF "
                                       "escape not in a pair), which is not text", code="E815",
                                       hint="fix or remove that escape")
                if not isinstance(row, dict):
                    raise DlcDataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}",
                                       code="E815", hint="every line of a .jsonl file must be one JSON object")
                rows.append(row)
    except UnicodeDecodeError as e:
        raise DlcDataError(f"{path} is not UTF-8 text", code="E815", hint="save the file as UTF-8") from e
    except OSError as e:
        raise DlcDataError(f"cannot read {path}: {e.strerror}", code="E802") from e
    return rows

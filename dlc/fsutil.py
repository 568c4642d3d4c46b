"""Atomic file writes: a reader (or a crash, or `kill -9`) sees the old file or the new one, never a mix.

Used for every artifact dlc writes (compiled manifests, run checkpoints and results, model indexes)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (best effort: some filesystems refuse to fsync directories)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask (read from /proc, which leaves it unchanged; else the usual 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temp file in the same directory, fsync it, then os.replace it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would have (0666 minus the umask)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------------------------------------ user output files
def output_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot take an output file (`--json FILE`, `-o FILE`), or None. Asked before the work that
    produces the file, so a long evaluation does not end in a traceback over a mistyped path."""
    p = Path(path)
    if p.is_dir():
        return "is a directory"
    if p.exists() and not p.is_file():
        return "is not a regular file"
    parent = next((a for a in (p.parent, *p.parent.parents) if a.exists()), Path("."))
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):     # the file (or its missing directories) is made in it
        return f"cannot be written: {parent} is not writable"
    return None


def check_output(path: str | os.PathLike[str], option: str) -> None:
    """E109 when `path` (given as `option`) cannot take an output file."""
    problem = output_problem(path)
    if problem is not None:
        from dlc.errors import DlcUsageError

        raise DlcUsageError(f"{option} {path} {problem}", code="E109",
                            hint=f"give {option} the path of a file to write, in a writable directory")


def write_output(path: str | os.PathLike[str], text: str, option: str) -> None:
    """Atomically write a user-named output file; any failure is E109 naming `option` (never a traceback)."""
    check_output(path, option)
    try:
        atomic_write_text(path, text)
    except OSError as e:
        from dlc.errors import DlcUsageError

        raise DlcUsageError(f"cannot write {option} {path}: {e.strerror or e}", code="E109",
                            hint=f"give {option} the path of a file to write, in a writable directory") from None

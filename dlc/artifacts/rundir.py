"""Run directories: where a `dlc fit` keeps everything needed to inspect, resume and reproduce it.

Layout of `runs/<net>-<YYYYmmdd-HHMMSS>/` (every JSON file is written atomically: temp file, fsync, rename):

    graph.json        the compiled artifact the run trains (dlc.artifacts.manifest JSON)
    source.dln        the `.dln` text it was compiled from (when known), so `<net>.fit.dln` can always be written
    config.json       resolved config: fit/data/models blocks, overrides, seed, graph and config sha256, dlc version
                      (records.RunConfig)
    backend.json      per model: backend, model id, capabilities (probed once)
    trace.jsonl       one JSON record per finished iteration (appended and fsynced before the checkpoint)
                      (records.IterationRecord)
    checkpoint.json   the trainer state after the last finished iteration, plus usage so far (records.Checkpoint)
    result.json       at the end: dev/test accuracy, prompts, usage (the contract scripts rely on) (records.FitResult)
    <net>.fit.dln     the source with the learned prompts written back

Resume contract: a run killed at any instant (even `kill -9`) has a checkpoint that is either the previous one or the
new one, never a torn file; the trace may hold one record more than the checkpoint (killed between the two writes)
and that record is dropped on resume, so the resumed run replays the iteration in flight exactly (dlc.rng derives
every choice from the seed and a path, and the LLM cache returns the same samples).

The typed files are read and written only through their types in dlc.artifacts.records (`config()` returns a
RunConfig, `write_checkpoint` takes a Checkpoint, ...); graph.json has its own codec (dlc.artifacts.manifest).
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from dlc.artifacts.canonical import canonical_sha256, json_line, pretty_json  # noqa: F401 (canonical_sha256: API)
from dlc.artifacts.records import (CHECKPOINT_SCHEMA, CONFIG_SCHEMA, RESULT_SCHEMA, Checkpoint,  # noqa: F401
                                   FitResult, IterationRecord, RunConfig)
from dlc import jsonread
from dlc.errors import DlcArtifactError, DlcUsageError
from dlc.fsutil import atomic_write_text, fsync_dir  # noqa: F401 (atomic_write_text: this module's API)

GRAPH = "graph.json"
SOURCE = "source.dln"
CONFIG = "config.json"
BACKEND = "backend.json"
TRACE = "trace.jsonl"
CHECKPOINT = "checkpoint.json"
RESULT = "result.json"
LOCK = "lock"


# ---------------------------------------------------------------------------------------------------------- writes

def dumps(obj: Any) -> str:
    """The one JSON style of run files: strict JSON (a non-finite number is written as null), sorted keys (stable
    diffs and hashes), UTF-8, indented."""
    return pretty_json(obj)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, dumps(obj))


def read_json(path: Path, what: str) -> Any:
    """Read a run file; any damage is a one-line E502 naming the file (never a JSONDecodeError traceback)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DlcArtifactError(f"corrupted run directory: {what} is missing ({path})", code="E502",
                               hint="the run directory is incomplete; start a new run with `dlc fit`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DlcArtifactError(f"corrupted run directory: cannot read {path}: {e}", code="E502") from None
    try:
        return jsonread.loads(text)
    except jsonread.BadJSON as e:
        raise DlcArtifactError(f"corrupted run directory: {path} is not valid JSON ({e.where()}{e.msg})", code="E502",
                               hint="the file was edited or truncated; start a new run with `dlc fit`") from None


# ---------------------------------------------------------------------------------------------------------- names

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def run_name(net: str, when: float | None = None) -> str:
    """`<net>-<YYYYmmdd-HHMMSS>` (local time), with unsafe characters of the net name replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when if when is not None else time.time()))
    return f"{_SAFE.sub('_', net) or 'net'}-{stamp}"


# ---------------------------------------------------------------------------------------------------------- RunDir

@dataclass
class RunDir:
    """A run directory on disk. Construct with `create` (new run) or `open` (existing run, validated)."""

    path: Path
    _held: "RunLock | None" = field(default=None, repr=False, compare=False)   # the lock `create` kept

    # -- creation -------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, net: str, *, root: str | os.PathLike[str] = "runs", explicit: str | os.PathLike[str] | None = None,
               when: float | None = None, populate: Callable[["RunDir"], None] | None = None) -> "RunDir":
        """Make a fresh run directory, atomically: it is built under a hidden temporary name next to its final
        place (`.<name>.creating-<pid>-<nonce>`), holding its lock from the start, filled by `populate` (the run's
        first files), then renamed into place. So two runs started at once into one `--run-dir` never mix files
        (the rename of the second fails: the target is no longer empty, E130), and a kill -9 during creation leaves
        no half-made run under the final name (the temporary one is removed by a later `create` in that place).

        `explicit` (--run-dir) is used as is and must not hold files already, so a previous run is never overwritten;
        otherwise `<root>/<net>-<timestamp>` with a `-2`, `-3` ... suffix on a same-second collision. With `populate`
        the returned run keeps holding its lock: the first `run.lock()` hands it over (so no other process can take
        the run between its creation and its training); without, the lock is released when it is in place."""
        if explicit is not None:
            path = Path(explicit)
            check_new_run_dir(path)
            parent, names = path.parent, [path.name]
        else:
            parent = Path(root)
            base = run_name(net, when)
            names = [base if i == 1 else f"{base}-{i}" for i in range(1, 1000)]
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DlcUsageError(f"cannot create a run directory under {parent}: {e.strerror or e}",
                                code="E130", hint="give --runs-root (or --run-dir) a writable place") from None
        _remove_abandoned(parent)
        tmp = parent / f".{names[0]}{_CREATING}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except OSError as e:
            raise DlcUsageError(f"cannot create a run directory under {parent}: {e.strerror or e}",
                                code="E130", hint="give --runs-root (or --run-dir) a writable place") from None
        lock = RunLock(tmp / LOCK)
        try:
            lock.acquire()
            if populate is not None:
                populate(cls(tmp))
            fsync_dir(tmp)
            final = _rename_into_place(tmp, parent, names, explicit is not None)
            lock.path = final / LOCK
        except BaseException:
            lock.release()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        run = cls(final)
        if populate is not None:
            run._held = lock
        else:
            lock.release()
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "RunDir":
        """An existing run directory; E501 when it is not one."""
        p = Path(path)
        if not p.is_dir():
            raise DlcArtifactError(f"no run directory at {p}", code="E501",
                                   hint="`dlc runs` lists the runs under ./runs")
        if not (p / CONFIG).exists() or not (p / GRAPH).exists():
            if not any((p / f).exists() for f in (CONFIG, GRAPH, SOURCE, BACKEND, TRACE, CHECKPOINT, RESULT)):
                # no file of a run at all: a directory that never was one (E501), not a damaged run (E502)
                raise DlcArtifactError(f"{p} is not a dlc run directory (no {CONFIG} / {GRAPH})", code="E501",
                                       hint="pass a directory made by `dlc fit`, e.g. runs/<net>-<timestamp>")
            raise DlcArtifactError(f"corrupted run directory: {p} has no {CONFIG if (p / GRAPH).exists() else GRAPH}",
                                   code="E502", hint="the run directory is incomplete; start a new run with `dlc fit`")
        return cls(p)

    # -- files ----------------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def read_json(self, name: str) -> Any:
        return read_json(self.path / name, name)

    def config(self) -> RunConfig:
        return RunConfig.from_json(self.read_json(CONFIG), source=str(self.path / CONFIG))

    def write_config(self, cfg: RunConfig) -> None:
        self.write_json(CONFIG, cfg.to_json())

    def graph_json(self) -> dict[str, Any]:
        g = self.read_json(GRAPH)
        if not isinstance(g, dict):
            raise DlcArtifactError(f"corrupted run directory: {self.path / GRAPH} is not an object", code="E502")
        return g

    def source_text(self) -> str | None:
        p = self.path / SOURCE
        if not p.exists():
            return None
        try:
            return p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DlcArtifactError(f"corrupted run directory: cannot read {p}: {e}", code="E502",
                                   hint="the run's copy of its .dln was edited or damaged") from None

    # -- trace ----------------------------------------------------------------------------------------------------
    def append_trace(self, record: IterationRecord) -> None:
        """Append one iteration record and fsync it (before the checkpoint that counts it is written)."""
        line = json_line(record.to_json())
        with open(self.path / TRACE, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _trace_lines(self) -> list[tuple[str, Any]]:
        """(line, parsed JSON) of each complete record; a torn last line (killed mid-write) is left out, any other
        damage is E502."""
        p = self.path / TRACE
        if not p.exists():
            return []
        out: list[tuple[str, Any]] = []
        try:
            raw = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DlcArtifactError(f"corrupted run directory: cannot read {p}: {e}", code="E502") from None
        lines = raw.split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append((line, jsonread.loads(line)))
            except jsonread.BadJSON:
                if i == len(lines) - 1:
                    break  # torn final line (no newline yet): the iteration in flight
                raise DlcArtifactError(f"corrupted run directory: {p} line {i + 1} is not valid JSON",
                                       code="E502") from None
        return out

    def trace(self) -> list[IterationRecord]:
        """The iteration records; a torn last line (killed mid-write) is ignored, any other damage is E502."""
        p = self.path / TRACE
        return [IterationRecord.from_json(rec, source=f"{p} record {i + 1}")
                for i, (_, rec) in enumerate(self._trace_lines())]

    def truncate_trace(self, n_records: int) -> int:
        """Keep the first `n_records` records (those the checkpoint counts), byte for byte; returns how many were
        dropped."""
        lines = self._trace_lines()
        dropped = max(0, len(lines) - n_records)
        raw = (self.path / TRACE).read_text(encoding="utf-8") if (self.path / TRACE).exists() else ""
        if dropped or (raw and not raw.endswith("\n")):
            atomic_write_text(self.path / TRACE, "".join(line + "\n" for line, _ in lines[:n_records]))
        return dropped

    # -- checkpoint -----------------------------------------------------------------------------------------------
    def write_checkpoint(self, ck: Checkpoint) -> None:
        self.write_json(CHECKPOINT, ck.to_json())

    def checkpoint(self) -> Checkpoint | None:
        """The last checkpoint (None before the first iteration finished); E502 when damaged."""
        if not (self.path / CHECKPOINT).exists():
            return None
        return Checkpoint.from_json(self.read_json(CHECKPOINT), source=str(self.path / CHECKPOINT))

    # -- result ---------------------------------------------------------------------------------------------------
    def write_result(self, res: FitResult) -> None:
        self.write_json(RESULT, res.to_json())

    def result(self) -> FitResult | None:
        if not (self.path / RESULT).exists():
            return None
        return FitResult.from_json(self.read_json(RESULT), source=str(self.path / RESULT))

    def is_finished(self) -> bool:
        return (self.path / RESULT).exists()

    # -- single writer --------------------------------------------------------------------------------------------
    def lock(self) -> "RunLock":
        """The run's lock, to use as `with run.lock():`; the one `create(populate=...)` kept, the first time."""
        held, self._held = self._held, None
        return held if held is not None else RunLock(self.path / LOCK)


class RunLock:
    """An advisory `flock` on the run directory, so two `dlc fit --resume` of one run cannot interleave writes.
    The kernel drops it when the process dies (kill -9 included), so a crashed run never stays locked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting: E131 when another process (or another RunLock) holds it."""
        import fcntl

        if self._fd is not None:
            return
        try:
            fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise DlcArtifactError(f"corrupted run directory: cannot open its lock file {self.path}: "
                                   f"{e.strerror or e}", code="E502",
                                   hint="the lock file must be a plain file; remove what is there") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DlcUsageError(f"{self.path.parent} is in use by another dlc process", code="E131",
                                hint="wait for it to finish (or stop it) and resume again") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


_CREATING = ".creating-"
_ABANDONED_AFTER = 60.0      # seconds: older temporary run directories whose lock is free belong to a dead process


def check_new_run_dir(path: Path) -> None:
    """E130 unless `path` (--run-dir) is absent or an empty directory (checked early, before anything is loaded;
    the rename in `RunDir.create` decides a race)."""
    problem = _dir_problem(path, must_be_empty=True)
    if problem is not None:
        hint = ("choose a new directory, or continue that run with `dlc fit --resume`" if problem == _NOT_EMPTY
                else "give --run-dir a new directory's path in a writable place")
        raise DlcUsageError(f"--run-dir {path} {problem}", code="E130", hint=hint)


def check_runs_root(root: Path) -> None:
    """E130 when run directories cannot be made under `root` (--runs-root): asked before any model is loaded, as
    `check_new_run_dir` is for --run-dir."""
    problem = _dir_problem(root)
    if problem is not None:
        raise DlcUsageError(f"--runs-root {root} {problem}", code="E130",
                            hint="give --runs-root a writable directory (it is created if missing)")


_NOT_EMPTY = "already exists and is not empty"


def _dir_problem(path: Path, *, must_be_empty: bool = False) -> str | None:
    """Why a directory cannot be made (or written) at `path`, or None: the path itself if it exists (empty, with
    `must_be_empty`), else its nearest existing ancestor, must be a writable directory."""
    try:
        if path.exists():
            if not path.is_dir():
                return "is a file, not a directory"
            if must_be_empty and any(path.iterdir()):
                return _NOT_EMPTY
            return None if os.access(path, os.W_OK | os.X_OK) else "is not writable"
        base = next((a for a in path.absolute().parents if a.exists()), Path("/"))
        if not base.is_dir():
            return f"cannot be created: {base} is not a directory"
        return None if os.access(base, os.W_OK | os.X_OK) else f"cannot be created: {base} is not writable"
    except OSError as e:
        return f"cannot be used: {e.strerror or e}"


def _rename_into_place(tmp: Path, parent: Path, names: list[str], explicit: bool) -> Path:
    """Rename the built directory to the first free name. rename(2) onto an existing empty directory replaces it and
    fails on a non-empty one (a built run directory always holds its lock file), so of several runs racing for one
    name exactly one gets it."""
    for name in names:
        path = parent / name
        if not explicit and path.exists():
            continue
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise DlcUsageError(f"cannot create the run directory {path}: {e.strerror or e}",
                                    code="E130") from None
            if explicit:
                raise DlcUsageError(f"--run-dir {path} already exists and is not empty", code="E130",
                                    hint="another run took it first; choose a new directory") from None
            continue
        fsync_dir(parent)
        return path
    raise DlcUsageError(f"cannot create a run directory under {parent}", code="E130")


def _remove_abandoned(parent: Path) -> None:
    """Remove temporary run directories of creations that died (kill -9) in `parent`: older than a minute and their
    lock free (a live creator holds it from just after the mkdir)."""
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(".") and _CREATING in p.name]
    except OSError:
        return
    now = time.time()
    for p in entries:
        try:
            if not p.is_dir() or p.is_symlink() or now - p.stat().st_mtime < _ABANDONED_AFTER:
                continue
            lock = RunLock(p / LOCK)
            lock.acquire()
        except (OSError, DlcUsageError, DlcArtifactError):
            continue
        try:
            shutil.rmtree(p, ignore_errors=True)
        finally:
            lock.release()


def iter_runs(root: str | os.PathLike[str] = "runs") -> Iterator[RunDir]:
    """Run directories directly under `root`, oldest first (by name, i.e. by timestamp within a net)."""
    r = Path(root)
    if not r.is_dir():
        return
    for p in sorted(r.iterdir(), key=lambda q: ((q / CONFIG).stat().st_mtime if (q / CONFIG).exists() else 0, q.name)):
        if p.is_dir() and not p.name.startswith(".") and (p / CONFIG).exists():
            yield RunDir(p)


def check_resumable(run: RunDir, *, graph_sha256: str | Sequence[str] | None,
                    config_sha256: str | None) -> RunConfig:
    """Validate a run for `--resume` before anything is written: the config file is intact, the stored artifact
    still hashes to what the run started with, and (when the user named a network/overrides) they are unchanged.
    `graph_sha256` may list every hash the named network has had (`identity.graph_identities`, newest first).
    Returns the run's config."""
    cfg = run.config()      # E502 when it lacks the hashes
    hashes = (graph_sha256,) if isinstance(graph_sha256, str) else tuple(graph_sha256 or ())
    if hashes and cfg.graph_sha256 not in hashes:
        raise DlcArtifactError(
            f"cannot resume {run.path}: the graph changed since the run started "
            f"(was {cfg.graph_sha256[:12]}, now {hashes[0][:12]})", code="E503",
            hint="resume without naming the network to continue the original, or start a new run")
    if config_sha256 is not None and config_sha256 != cfg.config_sha256:
        raise DlcArtifactError(
            f"cannot resume {run.path}: the fit/data/model config changed since the run started "
            f"(was {cfg.config_sha256[:12]}, now {config_sha256[:12]})", code="E504",
            hint="drop the --set overrides to continue the original, or start a new run")
    ck = run.checkpoint()
    if ck is not None and (ck.graph_sha256 != cfg.graph_sha256 or ck.config_sha256 != cfg.config_sha256):
        raise DlcArtifactError(f"corrupted run directory: {run.path / CHECKPOINT} belongs to another graph/config",
                               code="E502")
    check_progress(run, cfg, ck)
    return cfg


def check_progress(run: RunDir, cfg: RunConfig, ck: Checkpoint | None) -> None:
    """The checkpoint and the trace agree with each other and with the config, as the trainer writes them
    (dlc.app.training._train): iteration t = 0..iters appends one trace record, fsynced, then a checkpoint counting
    it; a checkpoint at iteration i counts i records (i + 1 once the final validation ran), one per entry of the
    state's history, and the state is at the checkpoint's iteration; the trace holds exactly those records, numbered
    0, 1, ..., plus at most the one of the iteration in flight (killed between the two writes; dropped on resume). Anything else — a lost or torn record the checkpoint counts, an
    emptied trace, a checkpoint past the configured iterations — is E502, found before anything is written."""
    ck_path, trace_path = run.path / CHECKPOINT, run.path / TRACE

    def damaged(message: str) -> DlcArtifactError:
        return DlcArtifactError(f"corrupted run directory: {message}", code="E502",
                                hint="the run's files were edited or damaged; start a new run with `dlc fit`")

    counted = 0
    if ck is not None:
        counted = ck.trace_records
        iters = cfg.iters
        if iters is not None and (ck.iteration > iters or counted > iters + 1):
            raise damaged(f"{ck_path} is at iteration {ck.iteration} with {counted} trace record(s), but the run has "
                          f"{iters} iteration(s)")
        if ck.state.get("iteration") != ck.iteration:
            raise damaged(f"{ck_path}: the state is at iteration {ck.state.get('iteration')}, the checkpoint at "
                          f"{ck.iteration}")
        if not ck.iteration <= counted <= ck.iteration + 1:
            raise damaged(f"{ck_path} is at iteration {ck.iteration} but counts {counted} trace record(s)")
        history = ck.state.get("history")
        if isinstance(history, list) and len(history) != counted:
            raise damaged(f"{ck_path}: the state's history has {len(history)} iteration(s), the checkpoint counts "
                          f"{counted} trace record(s)")
    records = run.trace()
    if not counted <= len(records) <= counted + 1:
        raise damaged(f"{trace_path} holds {len(records)} complete record(s), the checkpoint counts {counted}"
                      + (" (records were lost or cut)" if len(records) < counted else ""))
    for i, rec in enumerate(records[:counted]):       # the one in flight, if any, is dropped on resume
        if rec.iteration != i:
            raise damaged(f"{trace_path} record {i + 1} is iteration {rec.iteration}, expected {i}")

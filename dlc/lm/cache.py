"""The disk cache of LLM results: SQLite in WAL mode, keyed by the sha256 of the whole canonical request.

Why the whole request (style guide habit 4; TextGrad's prompt-only key is the anti-example): two requests that differ
in anything that can change the answer — backend, model id (which carries the weights' sha256), rendered prompt,
temperature, top_p, max_tokens, stop, n, seed, or the continuation being scored — must never share an entry, while
an identical request (a resumed fit, a re-run eval) is answered from disk. Accounting tags are *not* part of the key
(the same call made for two graph nodes is one entry), and API keys or base URLs are never put in a request payload.

WAL lets several processes (parallel fits, `dlc serve` + a fit) read while one writes; every write is one short
transaction, so a crash loses at most the entry being written and never corrupts the file. Values are JSON, never
pickle. A row that cannot be read back (not JSON, or not the shape its reader expects: `{not json`, `[1,2,3]`) is a
miss, counted in `DiskCache.unreadable`: the model is asked again and the row rewritten; it never fails a run.
"""
from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from dlc.artifacts.canonical import canonical_json, canonical_sha256
from dlc.errors import DlcArtifactError
from dlc.lm.models import cache_root

CACHE_FILE = "lm-cache.sqlite3"
SCHEMA = 1


def request_key(payload: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a request payload (the payload must not contain secrets)."""
    return canonical_sha256(payload)


def default_cache_dir() -> Path:
    """`$DLC_CACHE_DIR`, else the platform user cache directory + `dlc`."""
    return cache_root()


class DiskCache:
    """A key -> JSON value store shared by threads (one connection per thread) and processes (WAL)."""

    def __init__(self, directory: Path | str | None = None, *, timeout: float = 60.0) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / CACHE_FILE
        self.timeout = timeout
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self.unreadable = 0          # rows that could not be read back, answered as misses (unreadable_row)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._while_locked(self._create_tables)
        except (OSError, sqlite3.Error) as e:
            raise DlcArtifactError(f"cannot open the LLM cache at {self.path}: {e}", code="E530",
                                   hint="set DLC_CACHE_DIR to a writable directory, or pass --no-cache") from e
        self._check_schema()

    def _create_tables(self) -> None:
        conn = self._conn()
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                         "model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))

    def _while_locked(self, step: Callable[[], None]) -> None:
        """Run `step` again while SQLite says the file is locked, up to `timeout`.

        Why: when several processes open a *new* cache at once (a sweep's trials, parallel fits), switching the file
        to WAL and creating the tables take an exclusive lock, and SQLite may answer SQLITE_BUSY at once without
        calling the busy handler (the journal-mode change is one of those cases), so `busy_timeout` alone does not
        cover it: 4 of 40 trials of six processes opening one new cache failed before this loop."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                step()
                return
            except sqlite3.OperationalError as e:
                text = str(e).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                    raise
                self._drop_thread_conn()
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _drop_thread_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._conns_lock:
                self._conns.remove(conn)
            conn.close()

    def _check_schema(self) -> None:
        """E531 at open, when the tables are not the ones this dlc reads (another program's file, another schema
        version): found here, before a run directory exists, not at the first lookup in the middle of a fit."""
        try:
            conn = self._conn()
            cols = {r[1] for r in conn.execute("PRAGMA table_info(entries)")}
            meta = {r[0]: r[1] for r in conn.execute("SELECT name, value FROM meta")}
        except sqlite3.Error as e:
            cols, meta = set(), {"error": str(e)}
        missing = sorted({"key", "kind", "model", "value", "created"} - cols)
        problem = (f"its entries table lacks column(s) {', '.join(missing)}" if missing else
                   f"it has schema version {meta.get('schema')!r}, this dlc reads {SCHEMA}"
                   if meta.get("schema") != str(SCHEMA) else None)
        if problem is not None:
            raise DlcArtifactError(f"the LLM cache {self.path} cannot be read: {problem}", code="E531",
                                   hint="delete the file to start an empty cache, pass another --cache-dir, "
                                        "or pass --no-cache")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: atomic and consistent after a crash
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def get(self, key: str) -> Any | None:
        """The stored value, or None on a miss."""
        try:
            row = self._conn().execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise DlcArtifactError(f"the LLM cache {self.path} cannot be read: {e}", code="E531",
                                   hint="delete the file to start an empty cache, or pass --no-cache") from e
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except (ValueError, TypeError, RecursionError) as e:   # `{not json`, a blob, 100k-deep nesting
            self.unreadable_row(key, f"not JSON ({type(e).__name__})")
            return None
        if value is None:                                       # dlc never stores null: it would read as a miss
            self.unreadable_row(key, "null")
        return value

    def unreadable_row(self, key: str, why: str) -> None:
        """Count a row that cannot be read back (damaged, or written by something else) as a miss: the caller asks
        the model again and `put` replaces the row. Warns once per cache (stderr), never fails."""
        with self._conns_lock:
            self.unreadable += 1
            first = self.unreadable == 1
        if first:
            print(f"dlc: warning: unreadable row in the LLM cache {self.path} ({why}, key {key[:12]}): treated as a "
                  "miss and rewritten; further ones are counted", file=sys.stderr)

    def put(self, key: str, value: Any, *, kind: str = "", model: str = "") -> None:
        text = canonical_json(value)
        try:
            conn = self._conn()
            with conn:
                conn.execute("INSERT OR REPLACE INTO entries (key, kind, model, value, created) VALUES (?,?,?,?,?)",
                             (key, kind, model, text, time.time()))
        except sqlite3.Error as e:
            raise DlcArtifactError(f"the LLM cache {self.path} cannot be written: {e}", code="E532",
                                   hint="check free disk space and permissions, or pass --no-cache") from e

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()
